"""An applicant's personal fields at rest: how they are sealed, indexed and revealed.

Name, ID number and phone are encrypted under the subject's DEK with `applicants/<column>/<row
id>` as associated data; the ID number and the phone also get a keyed blind index, cut to
20 bits, for equality lookups: a lookup returns candidates, each decrypted and compared.
Whatever reads or writes the `applicants` table's personal columns (the applicant repository,
the review queue, the OAuth phone comparison, the batch journal) goes through these
functions, so there is one keying of each.
"""

from __future__ import annotations

import hmac
from typing import Any

from pydantic import SecretStr

from storage.crypto import FieldCipher, FieldDecryptError
from storage.records import NewApplicant, RevealedApplicant

TABLE = "applicants"

# Each index keeps 20 bits of its HMAC (five hex digits), so that one index value stands for
# many people: whoever holds an old backup, the index key and the mask we print is left with
# a search of the whole space behind the mask and many values that fit (storage/README.md,
# "Blind indexes"). A lookup by index returns candidates; each is decrypted and compared.
# ID numbers: the mask shows the check character only, leaving ~6,900 division codes x
# ~30,000 birth dates x 1,000 sequence numbers / 11 ~ 1.9e10 numbers, ~18,000 per index
# value; among 10^6 applicants a lookup meets ~0.95 unrelated candidates.
ID_NUMBER_INDEX_BITS = 20
# Phones: the mask shows the first 3 digits, leaving 10^8 numbers, ~95 per index value.
PHONE_INDEX_BITS = 20


def id_number_index(cipher: FieldCipher, id_number: str) -> str:
    """The blind index of an ID number (as intake normalised it). Computed where the raw
    value is at hand; a lookup by it returns candidates, compared by `id_number_is`."""
    return cipher.blind_index(id_number, table=TABLE, column="id_number", bits=ID_NUMBER_INDEX_BITS)


def phone_index(cipher: FieldCipher, phone: str) -> str:
    """The blind index of a phone in E.164 form; candidates are compared by `phone_is`."""
    return cipher.blind_index(phone, table=TABLE, column="phone", bits=PHONE_INDEX_BITS)


def _holds(cipher: FieldCipher, column: str, row_id: str, blob: bytes | None, value: str) -> bool:
    if blob is None:
        return False
    try:
        stored = cipher.decrypt(blob, table=TABLE, column=column, row=row_id)
    except FieldDecryptError:  # its key destroyed (erased) or the value tampered: no match
        return False
    return hmac.compare_digest(stored.encode("utf-8"), value.encode("utf-8"))


def id_number_is(cipher: FieldCipher, row_id: str, blob: bytes | None, value: str) -> bool:
    """Whether the `applicants` row `row_id`, whose `id_number_ct` is `blob`, holds the ID
    number `value`: the check every candidate an index lookup returns must pass."""
    return _holds(cipher, "id_number", row_id, blob, value)


def phone_is(cipher: FieldCipher, row_id: str, blob: bytes | None, value: str) -> bool:
    """Whether the `applicants` row `row_id`, whose `phone_ct` is `blob`, holds `value`."""
    return _holds(cipher, "phone", row_id, blob, value)


def decrypt_phone(cipher: FieldCipher, row_id: str, blob: bytes | None) -> str | None:
    """The declared phone of one `applicants` row, or None if it has none or cannot be read."""
    if blob is None:
        return None
    try:
        return cipher.decrypt(blob, table=TABLE, column="phone", row=row_id)
    except FieldDecryptError:
        return None


def sealed_fields(cipher: FieldCipher, applicant: NewApplicant, *, row_id: str) -> dict[str, Any]:
    """The personal columns of a new `applicants` row: ciphertexts and blind indexes."""

    def enc(column: str, secret: SecretStr) -> bytes:
        return cipher.encrypt(
            secret.get_secret_value(),
            subject=applicant.applicant_ref,
            table=TABLE,
            column=column,
            row=row_id,
        )

    phone = applicant.phone.get_secret_value() if applicant.phone else None
    return {
        "name_ct": enc("name", applicant.name),
        "id_number_ct": enc("id_number", applicant.id_number),
        "phone_ct": enc("phone", applicant.phone) if applicant.phone else None,
        "id_number_bidx": id_number_index(cipher, applicant.id_number.get_secret_value()),
        "phone_bidx": phone_index(cipher, phone) if phone else None,
    }


def reveal(cipher: FieldCipher, row: Any) -> RevealedApplicant:
    """Decrypt one `applicants` row's personal fields (a row with its columns as
    attributes). Callers mask before output and audit the access."""

    def dec(column: str, blob: bytes) -> str:
        return cipher.decrypt(blob, table=TABLE, column=column, row=row.id)

    return RevealedApplicant(
        applicant_ref=row.applicant_ref,
        id_type=row.id_type,
        name=SecretStr(dec("name", row.name_ct)),
        id_number=SecretStr(dec("id_number", row.id_number_ct)),
        phone=SecretStr(dec("phone", row.phone_ct)) if row.phone_ct is not None else None,
    )


def sealed_field(
    cipher: FieldCipher, *, applicant_ref: str, row_id: str, field: str, value: str
) -> dict[str, Any]:
    """The columns of one corrected personal field: its ciphertext and, for the ID number
    and the phone, its blind index."""
    out: dict[str, Any] = {
        f"{field}_ct": cipher.encrypt(
            value, subject=applicant_ref, table=TABLE, column=field, row=row_id
        )
    }
    if field == "id_number":
        out["id_number_bidx"] = id_number_index(cipher, value)
    elif field == "phone":
        out["phone_bidx"] = phone_index(cipher, value)
    return out
