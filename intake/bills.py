"""A real vendor's bill, as its console exports the billed calls: one `VendorBillLine` per
billed call. Unlike the generic adapter's statement (`intake.statement`), a real vendor's
bill knows nothing of our idempotency key: a line is matched to our call by the vendor's
`request_id`, and a billed call whose answer never reached us (in doubt) by its action,
day and count.

Readers: `intake.tencent_bill.read_tencent_bill`, `intake.aliyun_bill.read_aliyun_bill`.
A line that breaks a rule becomes an `intake.statement.StatementRefusal` (line, column,
rule; never the value) and the rest are still read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class VendorBillLine:
    line_no: int  # the physical line of the file, the header being line 1
    billed_at: datetime  # aware
    request_id: str  # the vendor's RequestId of the call
    action: str  # the vendor's action name (IdCardVerification, Id2MetaVerify...)
    fee_cents: int  # what this call cost, in fen
    result_code: str  # the billed result code (Tencent `Result`, Aliyun `BizCode`)
