"""What the pages say, in Chinese and in English: the notices after an action, the case
states, the refusals (their kind, field and rule), the keyboard legend and the short labels
of the reasons a case carries. Chinese first: a person's language is their toggle's
(`idv_lang` cookie, `/web/lang/{code}`), else the first of zh / en their browser's
Accept-Language names, else zh.

A refusal's `field: rule` comes from a service in English and is always shown as it is (a
code the logs and the command line share); `refusal` gives the sentence beside it in the
person's language. A rule the catalogue does not know is shown in English only.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from fastapi import Request

LANGUAGES = ("zh", "en")
LANG_COOKIE = "idv_lang"


class Text(NamedTuple):
    zh: str
    en: str

    def say(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh


def language(request: Request) -> str:
    """The person's language: their toggle, else their browser's first of zh / en (by its
    q-values, in order), else zh."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    ranked: list[tuple[float, int, str]] = []
    for pos, part in enumerate(request.headers.get("accept-language", "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and q > 0:
            ranked.append((-q, pos, primary))
    return min(ranked)[2] if ranked else "zh"


# --- notices, states, headings -----------------------------------------------------------

MESSAGES: dict[str, Text] = {
    # After an action (`?done=`): fixed text, never a value.
    "done.claim": Text("已认领", "Claimed"),
    "done.release": Text("已释放", "Released"),
    "done.note": Text("已添加备注", "Note added"),
    "done.approve": Text("已批准", "Approved"),
    "done.reject": Text("已提议拒绝，待主管确认", "Reject proposed: a supervisor confirms it"),
    "done.request_info": Text(
        "已请求资料，案件等待申请人答复", "Information requested: the case waits for the answer"
    ),
    "done.escalate": Text("已升级至主管队列", "Escalated to the supervisor queue"),
    "done.refer": Text("已提议移交执法，待确认", "Referral proposed: it waits for confirmation"),
    "done.close": Text("已结案", "Closed"),
    "done.confirm": Text("已确认", "Confirmed"),
    "done.send_back": Text("已退回提议人", "Sent back to its proposer"),
    "done.confirm_void": Text(
        "失信名单命中已不成立，拒绝作废，请重新决定",
        "The court-list hit no longer stands: the reject is void, decide again",
    ),
    "done.snooze": Text("已暂缓", "Snoozed"),
    "done.assign": Text("已分配", "Assigned"),
    "done.tags": Text("标签已更新", "Tags changed"),
    "done.whitelist": Text("已加入白名单", "Whitelisted"),
    "done.view": Text("视图已保存", "View saved"),
    "done.bulk": Text("批量操作完成", "Bulk operation done"),
    "done.none": Text("没有待处理的案件", "No case is waiting for you"),
    "done.next": Text("已决定，这是下一个案件", "Decided: here is the next case"),
    "done.last": Text("已决定，没有更多待处理的案件", "Decided: no more cases wait for you"),
    "done.hold": Text("已设置法定保存", "Legal hold placed"),
    "done.erasure_proposed": Text(
        "已提议删除，待另一位合规官确认", "Erasure proposed: another compliance officer confirms it"
    ),
    "done.erasure_confirmed": Text("删除已确认并执行", "Erasure confirmed and carried out"),
    "done.erasure_withdrawn": Text("删除提议已撤回", "Erasure proposal withdrawn"),
    # Case states.
    "status.open": Text("待处理", "open"),
    "status.waiting": Text("等待中", "waiting"),
    "status.pending_confirmation": Text("待确认", "pending confirmation"),
    "status.closed": Text("已结", "closed"),
    "status.closed_erased": Text("已结（已删除）", "closed (erased)"),
    "waiting.applicant": Text("等待申请人答复，至", "waiting for the applicant until"),
    "waiting.snooze": Text("暂缓至", "snoozed until"),
    # A refusal's kind.
    "kind.denied": Text("无权限", "Not permitted"),
    "kind.conflict": Text("冲突", "Conflict"),
    "kind.not_found": Text("未找到", "Not found"),
    "kind.invalid": Text("输入无效", "Invalid input"),
    "kind.unavailable": Text("暂不可用", "Unavailable"),
    # The zone every time is shown in.
    "zone": Text("时间均为北京时间（Asia/Shanghai, UTC+8）", "Times in Asia/Shanghai (UTC+8)"),
    # The applicant's self-service pages (`idv.web.applicant_self`).
    "self.title": Text("我的授权与请求", "My consents and requests"),
    "self.nav.consents": Text("我的授权", "My consents"),
    "self.nav.requests": Text("我的请求", "My requests"),
    "self.consents.none": Text("暂无授权记录", "No consent is recorded"),
    "self.state.live": Text("有效", "in force"),
    "self.state.withdrawn": Text("已撤回", "withdrawn"),
    "self.state.expired": Text("已过期", "expired"),
    "self.state.not_yet_valid": Text("尚未生效", "not yet in force"),
    "self.state.not_bound": Text("记录待核查", "record under check"),
    "self.sensitive": Text("敏感个人信息", "sensitive"),
    "self.notice": Text("告知版本", "Notice version"),
    "self.granted_at": Text("同意时间", "Granted"),
    "self.expires_at": Text("有效期至", "Valid until"),
    "self.withdrawn_at": Text("撤回时间", "Withdrawn"),
    "self.withdraw": Text("撤回此授权", "Withdraw this consent"),
    "self.withdraw.explain": Text(
        "撤回后，我们立即停止依赖此授权的处理，尚未进行的核验步骤不再进行；撤回前已进行的处理不受影响。",
        "Once withdrawn, processing that relies on this consent stops at once and the checks "
        "not yet made are not made; what was done before stays as it was.",
    ),
    "self.withdraw.confirm": Text("确认撤回", "Withdraw"),
    "self.back": Text("返回", "Back"),
    "self.done.withdrawn": Text("授权已撤回", "Consent withdrawn"),
    "self.done.already_withdrawn": Text("此授权此前已撤回", "This consent was withdrawn already"),
    "self.done.opened": Text("请求已提交", "Request sent"),
    "self.done.already_open": Text(
        "同类请求正在处理中，无需重复提交", "A request of this kind is being handled already"
    ),
    "self.purpose.onboarding_verification": Text(
        "借款申请前的身份核验与风险评估", "Identity check and risk assessment before a loan"
    ),
    "self.purpose.ongoing_monitoring": Text(
        "借款期间的持续核验", "Checks again during the life of the loan"
    ),
    "self.scope.id_verification": Text(
        "姓名与身份证号核验", "Name and ID number checked with a licensed source"
    ),
    "self.scope.carrier_check": Text("手机号运营商核验", "Phone number checked with the carrier"),
    "self.scope.court_records": Text("失信被执行人名单查询", "Court dishonest-debtor list"),
    "self.scope.credit_report": Text("征信报告摘要", "Credit bureau summary"),
    "self.scope.wechat_profile": Text("微信账号标识", "WeChat account identifiers"),
    "self.scope.wechat_phone": Text("微信绑定手机号", "Phone number bound to WeChat"),
    "self.scope.oidc_profile": Text(
        "第三方账号标识", "Account identifiers from a sign-in provider"
    ),
    "self.scope.behavior_signals": Text("登录与资料变更记录", "Login and profile-change events"),
    "self.scope.risk_scoring": Text("自动化风险评分", "Automated risk score"),
    "self.scope.face_verification": Text("人脸识别核验", "Face verification"),
    "self.ask.heading": Text("提出请求", "Make a request"),
    "self.ask.explain": Text(
        "我们会在期限内答复（15个工作日），并在此页显示处理状态。",
        "We answer within the deadline (15 working days); this page shows where it stands.",
    ),
    "self.ask.access": Text("获取我的个人信息副本", "A copy of my personal information"),
    "self.ask.correction.name": Text("更正我的姓名", "Correct my name"),
    "self.ask.correction.id_number": Text("更正我的身份证号", "Correct my ID number"),
    "self.ask.correction.phone": Text("更正我的手机号", "Correct my phone number"),
    "self.ask.erasure": Text("删除我的个人信息", "Delete my personal information"),
    "self.ask.dispute.decision": Text("对审核结果提出异议", "Dispute the decision"),
    "self.ask.dispute.court_list": Text("对失信名单匹配提出异议", "Dispute a court-list match"),
    "self.requests.none": Text("暂无请求", "No request yet"),
    "self.request.open": Text("处理中", "being handled"),
    "self.request.answered": Text("已答复", "answered"),
    "self.request.overdue": Text("已超过答复期限", "past its deadline"),
    "self.request.opened_at": Text("提交时间", "Sent"),
    "self.request.deadline": Text("答复期限", "Answer by"),
    "self.request.answered_at": Text("答复时间", "Answered"),
    "self.outcome.delivered": Text("副本已提供", "copy delivered"),
    "self.outcome.corrected": Text("已更正", "corrected"),
    "self.outcome.erased": Text("已删除", "deleted"),
    "self.outcome.restricted": Text("已限制处理", "processing restricted"),
    "self.outcome.upheld": Text("维持原结果", "the result stands"),
    "self.outcome.amended": Text("已更改结果", "the result was changed"),
    "self.refused.title": Text("链接无效或已过期", "This link is not valid"),
    "self.refused.body": Text(
        "链接可能已被使用、已过期或不完整。请回到借款应用重新获取链接。",
        "It may have been used, run out or been cut short. Ask the lender's app for a new one.",
    ),
    "self.error.title": Text("未能完成", "Not done"),
    "self.sign_in.title": Text("登录查看我的授权与请求", "Sign in to your consents and requests"),
    "self.sign_in.explain": Text(
        "请使用您在核验时授权过的微信账号登录。",
        "Sign in with the WeChat account you authorized during the verification.",
    ),
    "self.sign_in.wechat": Text("用微信登录", "Sign in with WeChat"),
    "self.sign_in.or_link": Text(
        "也可以在借款应用中获取一次性链接。",
        "Or ask the lender's app for a one-time link.",
    ),
}


def say(key: str, lang: str) -> str:
    """The message `key` in `lang` (the key itself when the catalogue lacks it)."""
    found = MESSAGES.get(key)
    return found.say(lang) if found is not None else key


# --- refusals: the field and the rule -----------------------------------------------------

FIELDS: dict[str, str] = {
    "action": "操作",
    "actor": "操作人",
    "applicant_ref": "申请人编号",
    "assignee": "处理人",
    "audit_chain": "审计链",
    "basis": "保存依据",
    "case_id": "案件",
    "case_ids": "案件",
    "case_number": "案号",
    "channel": "渠道",
    "checkpoints": "检查点",
    "court": "失信名单",
    "consent": "授权",
    "days": "天数",
    "disposition": "处置",
    "do": "操作",
    "erasure": "删除提议",
    "evidence_version": "证据版本",
    "field": "字段",
    "kind": "类型",
    "lease": "认领期限",
    "name": "名称",
    "older_than_hours": "时长",
    "permission": "权限",
    "purpose": "目的",
    "q": "搜索",
    "queue": "队列",
    "reason": "理由",
    "reason_code": "原因",
    "request_id": "请求",
    "reveal": "显示",
    "role": "角色",
    "since": "起始时间",
    "sort": "排序",
    "status": "状态",
    "tag": "标签",
    "template": "模板",
    "text": "备注",
    "until": "截止时间",
    "view": "视图",
}

# English rule -> Chinese. Each pattern matches a rule a service or the form check gives
# (`\Z`: the whole rule); groups carry numbers and codes into the Chinese.
RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern + r"\Z"), zh)
    for pattern, zh in (
        (r"Field required", "必填"),
        (r"Input should be (.+)", r"应为 \1"),
        (r"String should have at least (\d+) characters?", r"至少 \1 个字符"),
        (r"String should have at most (\d+) characters?", r"最多 \1 个字符"),
        (r"String should match pattern .*", "格式不符"),
        (r"Input should be a valid datetime.*", "应为有效的日期时间"),
        (r"at least (\d+) characters are required", r"至少需要 \1 个字符"),
        (
            r"at least (\d+) characters are required to declare a value",
            r"声明取值至少需要 \1 个字符",
        ),
        (
            r"must say why in words, not one character repeated",
            "请用文字说明理由，不能重复同一字符",
        ),
        (r"must be one of (.+)", r"应为以下之一：\1"),
        (r"is required to (assign|close)", "为此操作所必填"),
        (r"closing needs one of (.+)", r"结案须选择处置：\1"),
        (r"claim the case first .*", "请先认领案件"),
        (r"the claim's lease has expired: claim again", "认领已过期，请重新认领"),
        (r"a decision waits for confirmation", "已有决定等待确认"),
        (r"no decision waits for confirmation", "没有等待确认的决定"),
        (r"nobody confirms their own decision", "不能确认本人的决定"),
        (r"held under another person's live claim", "已被他人认领"),
        (r"not claimed by you", "不是您认领的案件"),
        (r"claimed by someone else", "已被他人认领"),
        (r"assigned to someone else", "已分配给他人"),
        (r"the case is closed", "案件已结"),
        (
            r"your proposal waits for a second person, who claims it to confirm it",
            "您的提议等待另一人认领并确认",
        ),
        (r"the case changed meanwhile: read it again", "案件已被更改，请重新打开"),
        (
            r"the evidence changed since it was read: read the case again",
            "证据已更新，请重新打开案件",
        ),
        (
            r"the evidence changed since the decision was proposed: it is void",
            "提议后证据已更新，该提议作废",
        ),
        (r"already in the supervisor queue", "已在主管队列"),
        (r"the (\w+) queue is not this role's", r"该角色不能处理 \1 队列"),
        (r"does not work the (\w+) queue", r"不处理 \1 队列"),
        (r"must be an active user", "须为启用中的用户"),
        (r"must be a person whose role works cases", "须为可处理案件的角色"),
        (
            r"proposed the decision that waits on the case: a second person confirms it",
            "此人是待确认决定的提议人，须由另一人确认",
        ),
        (
            r"a value is revealed only on an open case you hold or are assigned",
            "只能在您认领或分配给您的未结案件上显示",
        ),
        (r"the daily limit of (\d+) reveals is reached", r"已达每日 \1 次显示上限"),
        (r"the subject is erased or restricted", "该主体已删除或受限"),
        (r"role '(\w+)' lacks the '(\w+)' permission", r"角色 \1 没有 \2 权限"),
        (r"is not a known role", "不是已知角色"),
        (r"no such case", "无此案件"),
        (r"no such saved view", "无此视图"),
        (r"no such applicant", "无此申请人"),
        (r"no such subject", "无此主体"),
        (r"nothing is held about this subject", "未持有该主体的任何数据"),
        (r"no such request", "无此请求"),
        (r"must be in the future, within 90 days", "须为将来 90 天以内的时间"),
        (r"must be 1-4000 characters", "须为 1 至 4000 个字符"),
        (r"must be 1-366", "须为 1 至 366"),
        (r"must be 1-64 letters, digits, _ or -", "须为 1 至 64 个字母、数字、_ 或 -"),
        (r"must not contain an ID or phone number", "不得包含证件号或手机号"),
        (r"no court-list source is wired here", "未接入失信名单数据源"),
        (r"no checkpoint log is configured", "未配置检查点"),
        (r"no checkpoint key is configured", "未配置检查点密钥"),
        (r"must not exist yet", "不得已存在"),
        (r"broken at (\d+): .*", r"在第 \1 条事件处断裂"),
        (r"must be a case id or an applicant ref", "须为案件编号或申请人编号"),
        (r"no erasure proposal waits for this subject", "该主体没有等待确认的删除提议"),
        (r"an erasure proposal waits for this subject already", "该主体已有等待确认的删除提议"),
        (r"nobody confirms their own proposal", "不能确认本人的提议"),
        (r"only its proposer withdraws a proposal", "只有提议人可以撤回提议"),
    )
)


def rule_zh(rule: str) -> str | None:
    """The rule in Chinese, or None when the catalogue does not know it."""
    for pattern, zh in RULES:
        found = pattern.match(rule)
        if found:
            return found.expand(zh)
    return None


def refusal(field: str, rule: str, lang: str) -> str:
    """The sentence beside a refusal's `field: rule`: in Chinese, the field's name and the
    rule translated (the English `field: rule` is shown beside it in any case); in English,
    the rule."""
    if lang == "en":
        return f"{field}: {rule}"
    zh = rule_zh(rule)
    head = FIELDS.get(field.split(".")[0], field)
    return f"{head}：{zh}" if zh is not None else f"{head}：{rule}"


# --- the reasons a case carries, short --------------------------------------------------

SHORT_REASONS: dict[str, Text] = {
    "COURT_CONFIRMED_HIT": Text("失信确认", "court: confirmed"),
    "COURT_PROBABLE_HIT": Text("失信疑似", "court: probable"),
    "COURT_RECORD_SUSPECT": Text("失信存疑", "court: suspect"),
    "COURT_NEW_LISTING": Text("新列失信", "court: new listing"),
    "COURT_DELISTED": Text("失信移除", "court: delisted"),
    "COURT_SOURCE_ERROR": Text("失信查询失败", "court: error"),
    "COURT_NOT_CHECKED": Text("失信未查", "court: unchecked"),
    "COURT_NO_PROPERTY_CASE": Text("终本案件", "court: no property"),
    "ID_MISMATCH": Text("身份不符", "ID mismatch"),
    "ID_NO_RECORD": Text("身份无记录", "ID: no record"),
    "ID_SOURCE_ERROR": Text("身份查询失败", "ID: error"),
    "ID_NOT_CHECKED": Text("身份未核", "ID: unchecked"),
    "ID_SHARED_ACROSS_APPLICATIONS": Text("证件多申请", "ID shared"),
    "PHONE_VIRTUAL_OPERATOR": Text("虚拟号段", "virtual operator"),
    "CARRIER_MISMATCH": Text("运营商不符", "carrier mismatch"),
    "CARRIER_NO_RECORD": Text("运营商无记录", "carrier: no record"),
    "CARRIER_SOURCE_ERROR": Text("运营商失败", "carrier: error"),
    "CARRIER_NOT_CHECKED": Text("运营商未核", "carrier: unchecked"),
    "PHONE_NOT_IN_SERVICE": Text("号码停用", "phone not in service"),
    "PHONE_STATUS_UNKNOWN": Text("号码状态未知", "phone status unknown"),
    "PHONE_STATUS_SOURCE_ERROR": Text("状态查询失败", "phone status: error"),
    "PHONE_STATUS_NOT_CHECKED": Text("状态未查", "phone status: unchecked"),
    "PHONE_VERY_NEW": Text("新号<3月", "phone < 3 months"),
    "PHONE_NEW": Text("新号3-6月", "phone 3-6 months"),
    "PHONE_NUMBER_NOT_FOUND": Text("查无号码", "phone not found"),
    "PHONE_TENURE_UNKNOWN": Text("在网时长未知", "tenure unknown"),
    "CREDIT_THIN_FILE": Text("征信白户", "thin credit file"),
    "CREDIT_SOURCE_ERROR": Text("征信失败", "credit: error"),
    "CREDIT_NOT_CHECKED": Text("征信未查", "credit: unchecked"),
    "MULTI_LENDER_MEDIUM": Text("多头较多", "multi-lender"),
    "MULTI_LENDER_HIGH": Text("多头过多", "multi-lender high"),
    "OVERDUE_MINOR": Text("逾期≤30天", "overdue ≤ 30 d"),
    "OVERDUE_SERIOUS": Text("逾期31-90天", "overdue 31-90 d"),
    "OVERDUE_SEVERE": Text("逾期>90天", "overdue > 90 d"),
    "HUMAN_REVIEW_REQUESTED": Text("申请人工", "human review asked"),
    "NO_AUTOMATED_DECISION": Text("不自动决策", "no automated decision"),
    "ACCOUNT_CHECK_FAILED": Text("账户核验失败", "account check failed"),
    "ACCOUNT_SOURCE_ERROR": Text("账户查询失败", "account: error"),
    "ACCOUNT_CONTROL_NOT_PROVEN": Text("账户控制未证", "account control"),
    "ACCOUNT_PHONE_MISMATCH": Text("账户手机不符", "account phone"),
    "ACCOUNT_SHARED_FEW": Text("账户共用", "account shared"),
    "ACCOUNT_SHARED_MANY": Text("账户多人共用", "account shared many"),
    "ACCOUNT_NEW": Text("新账户", "new account"),
    "BEHAVIOR_IMPOSSIBLE_TRAVEL": Text("异常位移", "impossible travel"),
    "BEHAVIOR_NEW_DEVICE_REGION": Text("新设备新地区", "new device/region"),
    "BEHAVIOR_PROFILE_CHANGES": Text("资料频改", "profile changes"),
    "RECONSENT_NEEDED": Text("需重新授权", "re-consent"),
    "SUBJECT_REQUEST_DISPUTE": Text("异议", "dispute"),
    "SUBJECT_REQUEST_CORRECTION": Text("更正请求", "correction"),
    "SUBJECT_REQUEST_ACCESS": Text("查阅请求", "access request"),
    "SUBJECT_REQUEST_ERASURE": Text("删除请求", "erasure request"),
    "SUBJECT_REQUEST_RESTRICTION": Text("限制请求", "restriction"),
}


def short_reason(code: str, lang: str) -> str:
    """A reason's short label for a queue row (the code when the catalogue lacks it)."""
    found = SHORT_REASONS.get(code)
    return found.say(lang) if found is not None else code


def both(key: str, lang: str) -> str:
    """The message `key` in both languages, the person's first (a state or a label beside
    which the other language stays)."""
    found = MESSAGES.get(key)
    if found is None:
        return key
    return f"{found.en} {found.zh}" if lang == "en" else f"{found.zh} {found.en}"


# --- the applicant portal's journey (idv.web.applicant) ------------------------------------

MESSAGES.update(
    {
        "portal.title": Text("身份核验", "Identity verification"),
        "portal.footer": Text("时间均为北京时间（UTC+8）", "Times are Beijing time (UTC+8)"),
        "portal.step.consents": Text("告知与同意", "Notice and consent"),
        "portal.step.wechat": Text("微信授权", "WeChat authorization"),
        "portal.step.face": Text("人脸核验", "Face verification"),
        "portal.step.done": Text("完成", "Done"),
        "portal.refused.title": Text("链接无效", "This link does not work"),
        "portal.refused.body": Text(
            "链接可能已被修改、已过期或已使用。请向贷款机构索取新的链接。",
            "It may have been altered, have expired or been used already. "
            "Ask the lender for a new link.",
        ),
        "portal.error.title": Text("无法完成", "This could not be done"),
        "portal.error.back": Text("返回", "Back"),
        "portal.notice.general": Text("个人信息处理告知书", "Privacy notice"),
        "portal.notice.enhanced": Text("逐项单独同意", "Each sensitive use, separately"),
        "portal.notice.separately": Text(
            "以下每一项都需要您单独决定；默认均未勾选。",
            "Decide on each use below on its own; none is switched on.",
        ),
        "portal.notice.refusing": Text(
            "不勾选即表示拒绝该项；拒绝可选项不影响其他各项。48 小时内不会再次询问您拒绝的项目。",
            "A use left off is refused; refusing an optional use never blocks the rest. "
            "A refused use is not asked again for 48 hours.",
        ),
        "portal.use.id_check": Text("身份核验", "ID check"),
        "portal.use.carrier_check": Text("运营商核验", "Mobile carrier check"),
        "portal.use.court_list": Text("失信被执行人名单查询", "Court dishonest-debtor list"),
        "portal.use.credit_bureau": Text("征信查询", "Credit bureau"),
        "portal.use.wechat_account": Text("微信账户", "WeChat account"),
        "portal.use.face": Text("人脸识别", "Face verification"),
        "portal.optional": Text("可选", "optional"),
        "portal.agree": Text("我同意此项", "I agree to this use"),
        "portal.state.ask": Text("待决定", "To decide"),
        "portal.state.granted": Text("已同意", "Agreed"),
        "portal.state.live": Text("有效", "In force"),
        "portal.state.withdrawn": Text("已撤回", "Withdrawn"),
        "portal.state.expired": Text("已过期", "Expired"),
        "portal.state.not_yet_valid": Text("尚未生效", "Not yet in force"),
        "portal.state.not_bound": Text("记录不一致", "Record inconsistent"),
        "portal.state.refused": Text(
            "您已拒绝，之后可再询问：", "You refused; may be asked again after:"
        ),
        "portal.submit": Text("提交我的选择", "Send my choices"),
        "portal.continue": Text("继续", "Continue"),
        "portal.wechat.body": Text(
            "您同意了微信账户一项：请在微信中确认授权。",
            "You agreed to the WeChat account use: confirm the authorization in WeChat.",
        ),
        "portal.wechat.start": Text("去微信授权", "Authorize in WeChat"),
        "portal.wechat.go_body": Text(
            "点击下方按钮，在微信中确认授权；完成后可返回本流程。",
            "Tap below to confirm in WeChat; then come back to this journey.",
        ),
        "portal.wechat.skip": Text(
            "此步骤无需操作，请继续。", "Nothing to do at this step: continue."
        ),
        "portal.face.body": Text(
            "您将前往人脸核验服务商的页面完成活体检测，完成后自动返回。",
            "You will go to the face verification vendor's page and come back here after.",
        ),
        "portal.face.start": Text("开始人脸核验", "Start face verification"),
        "portal.face.go_body": Text(
            "核验已准备好：点击下方按钮前往服务商的核验页面。",
            "The verification is ready: tap below to go to the vendor's page.",
        ),
        "portal.face.go": Text("前往核验页面", "Go to the verification page"),
        "portal.face.not_granted": Text(
            "您未同意人脸识别，我们不会进行人脸核验。",
            "You did not agree to face verification: it will not be done.",
        ),
        "portal.face.another_body": Text(
            "您也可以不做人脸识别，改由人工审核您提供的证件。",
            "You may also verify another way: an analyst checks a document you send.",
        ),
        "portal.face.another": Text("用其他方式核验", "Verify another way"),
        "portal.face.check_again": Text("再次查询结果", "Check the result again"),
        "portal.face.state.final": Text("核验已完成", "The verification is complete"),
        "portal.face.state.pending": Text("核验尚未完成", "The verification is not finished yet"),
        "portal.face.state.expired": Text("核验已过期", "The verification expired"),
        "portal.face.state.lost": Text("核验结果无法取得", "The result could not be had"),
        "portal.face.state.error": Text("暂时无法取得结果", "The result cannot be had for now"),
        "portal.done.title": Text("已完成", "All done"),
        "portal.done.another_way": Text(
            "我们已记录您选择其他方式核验，工作人员会与您联系。",
            "We recorded that you chose another way; someone will contact you.",
        ),
        "portal.done.receipts": Text(
            "您的同意回执（已签名，含所示告知文本的哈希）：",
            "Your consent receipts (signed, with the hash of the notice text you saw):",
        ),
        "portal.done.download": Text("下载回执", "Download the receipt"),
        "portal.done.none": Text("您未作出任何同意。", "You agreed to nothing."),
        "portal.done.self": Text("查看或撤回我的同意", "See or withdraw my consents"),
        "portal.done.back": Text("返回贷款机构", "Back to the lender"),
        "portal.scope.id_verification": Text("身份核验", "ID check"),
        "portal.scope.carrier_check": Text("运营商核验", "Mobile carrier check"),
        "portal.scope.court_records": Text("失信被执行人名单", "Court list"),
        "portal.scope.credit_report": Text("征信", "Credit bureau"),
        "portal.scope.wechat_profile": Text("微信账户", "WeChat account"),
        "portal.scope.face_verification": Text("人脸识别", "Face verification"),
    }
)
