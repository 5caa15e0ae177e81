"""Per-person cap keys are truncated digests (issue 29, D4): the limiter named a person by the
full 256-bit HMAC of the ID number, kept 48 h in Redis. Now 32 bits of it, like the
database's blind indexes cut short; on SQLite and PostgreSQL."""

from __future__ import annotations

from flows.parts import CAP_KEY_BITS

ID_NUMBER = "11010519491231002X"


def test_a_persons_cap_key_is_a_truncated_digest(database, make_runtime):
    rt = make_runtime()
    limits = rt.call_limits
    key = limits.person_key("id_number", ID_NUMBER)
    full = rt.store.cipher.blind_index(ID_NUMBER, table="vendor_caps", column="id_number")
    assert len(full) == 64 and len(key) == CAP_KEY_BITS // 4 == 8
    assert full.startswith(key) and ID_NUMBER not in key
    assert limits.person_key("id_number", ID_NUMBER) == key  # stable: one counter a person
    assert limits.person_key("phone", ID_NUMBER) != key  # keyed per field
