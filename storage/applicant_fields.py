"""An applicant's personal fields at rest: how they are sealed, indexed and revealed.

Name, ID number and phone are encrypted under the subject's DEK with `applicants/<column>/<row
id>` as associated data; the ID number and the phone also get a keyed blind index for
equality lookups. Whatever reads or writes the `applicants` table's personal columns (the
applicant repository, the review queue, the OAuth phone comparison, the batch journal) goes
through these functions, so there is one keying of each.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from storage.crypto import FieldCipher
from storage.records import NewApplicant, RevealedApplicant

TABLE = "applicants"


def id_number_index(cipher: FieldCipher, id_number: str) -> str:
    """The blind index of an ID number (as intake normalised it). Computed where the raw
    value is at hand; everything past that point looks applicants up by the index."""
    return cipher.blind_index(id_number, table=TABLE, column="id_number")


def phone_index(cipher: FieldCipher, phone: str) -> str:
    """The blind index of a phone in E.164 form."""
    return cipher.blind_index(phone, table=TABLE, column="phone")


def sealed_fields(cipher: FieldCipher, applicant: NewApplicant, *, row_id: str
                  ) -> dict[str, Any]:
    """The personal columns of a new `applicants` row: ciphertexts and blind indexes."""

    def enc(column: str, secret: SecretStr) -> bytes:
        return cipher.encrypt(secret.get_secret_value(), subject=applicant.applicant_ref,
                              table=TABLE, column=column, row=row_id)

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
        applicant_ref=row.applicant_ref, id_type=row.id_type,
        name=SecretStr(dec("name", row.name_ct)),
        id_number=SecretStr(dec("id_number", row.id_number_ct)),
        phone=SecretStr(dec("phone", row.phone_ct)) if row.phone_ct is not None else None)


def sealed_field(cipher: FieldCipher, *, applicant_ref: str, row_id: str, field: str,
                 value: str) -> dict[str, Any]:
    """The columns of one corrected personal field: its ciphertext and, for the ID number
    and the phone, its blind index."""
    out: dict[str, Any] = {f"{field}_ct": cipher.encrypt(
        value, subject=applicant_ref, table=TABLE, column=field, row=row_id)}
    if field == "id_number":
        out["id_number_bidx"] = id_number_index(cipher, value)
    elif field == "phone":
        out["phone_bidx"] = phone_index(cipher, value)
    return out
