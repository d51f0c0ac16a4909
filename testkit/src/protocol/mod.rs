//! The providers' published signing and canonicalisation rules, written here from
//! `china-wallets.md` (sections A and B) for the sandboxes' side of each exchange. Nothing here
//! comes from the adapter crates: the golden tests in this crate pin both implementations to
//! the same public vectors (section D), so a canonicalisation bug in an adapter shows up as a
//! refused request instead of being mirrored by its sandbox.

pub mod alipay;
pub mod wechatpay;
