"""The SQL data model, one module per aggregate. Rows never leave the control plane and workers."""
from controlplane.models.accounts import Account, AccountKind, Group, Role, User, UserStatus, OPERATOR_ROLES
from controlplane.models.api_tokens import ApiToken
from controlplane.models.bans import Ban, BanKind
from controlplane.models.channels import Channel, ChannelEvent, ChannelKey, ChannelStatus
from controlplane.models.keys import ApiKey, KeyDecider, KeyStatus
from controlplane.models.ledger import EntryKind, LedgerEntry, Refund, RefundKind
from controlplane.models.logs import AuditEntry, RequestLog
from controlplane.models.prices import ModelPrice, ModelRoute
from controlplane.models.rollups import ChannelRollup, UsageRollup
from controlplane.models.types import utcnow
from controlplane.models.alerts import AlertSetting
from controlplane.models.organisations import Invitation, MemberRole, Membership
from controlplane.models.redemption import RedemptionBatch, RedemptionCode
from controlplane.models.sessions import UserSession
from controlplane.models.recovery_codes import RecoveryCode
from controlplane.models.incidents import Impact, Incident
from controlplane.models.lifecycle import (
    BudgetAlert, DisruptionCredit, DisruptionCreditLine, PriceNotice, TermsAcceptance, TermsVersion,
)
from controlplane.models.payments import (
    BillingProfile, Invoice, InvoiceSeries, Payment, PaymentStatus, RefundRequest, RefundRequestStatus, StripeEvent, StripeSettings,
)

__all__ = [
    "Account", "AccountKind", "ApiKey", "ApiToken", "AuditEntry", "Ban", "BanKind", "Channel", "ChannelEvent",
    "ChannelKey", "ChannelRollup", "ChannelStatus", "EntryKind", "Group", "KeyDecider", "KeyStatus", "LedgerEntry", "ModelPrice", "ModelRoute",
    "OPERATOR_ROLES", "Refund", "RefundKind", "RequestLog", "Role", "UsageRollup", "User", "UserStatus", "utcnow",
    # user console
    "AlertSetting", "Invitation", "MemberRole", "Membership", "RedemptionBatch", "RedemptionCode", "UserSession",
    "RecoveryCode",
    # status page
    "Impact", "Incident",
    # lifecycle
    "BudgetAlert", "DisruptionCredit", "DisruptionCreditLine", "PriceNotice", "TermsAcceptance", "TermsVersion",
    # card payments
    "BillingProfile", "Invoice", "InvoiceSeries", "Payment", "PaymentStatus", "RefundRequest", "RefundRequestStatus", "StripeEvent",
    "StripeSettings",
]
