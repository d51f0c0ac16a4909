//! Alipay RSA2 sign strings (china-wallets.md A.3 and A.8).
//!
//! Requests: every parameter that is sent except `sign` (so `sign_type` *is* signed),
//! empty values dropped, sorted by key in byte order, joined `k=v` with `&`, values raw
//! (not URL-encoded). Trade notifications ("V1" rule): the same, but `sign_type` is
//! excluded as well.

/// Which parameters besides `sign` stay out of the signed string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignRule {
    /// Requests and gateway-pushed messages: only `sign` is excluded.
    Request,
    /// Trade notifications: `sign` and `sign_type` are excluded.
    NotificationV1,
}

/// Builds the string Alipay signs from `(key, value)` pairs.
pub fn sign_content<'a, I>(params: I, rule: SignRule) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut pairs: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(key, value)| !key.is_empty() && !value.is_empty())
        .filter(|(key, _)| *key != "sign")
        .filter(|(key, _)| !(rule == SignRule::NotificationV1 && *key == "sign_type"))
        .collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    moongate_contract::crypto::join_pairs(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_sign_and_empty_values_and_sorts_by_key() {
        let params = [
            ("version", "1.0"),
            ("sign", "xyz"),
            ("app_id", "1"),
            ("notify_url", ""),
            ("sign_type", "RSA2"),
        ];
        assert_eq!(
            sign_content(params, SignRule::Request),
            "app_id=1&sign_type=RSA2&version=1.0"
        );
        assert_eq!(
            sign_content(params, SignRule::NotificationV1),
            "app_id=1&version=1.0"
        );
    }

    #[test]
    fn sorts_in_byte_order_not_locale_order() {
        let params = [("b", "2"), ("B", "1"), ("a_b", "3"), ("ab", "4")];
        assert_eq!(
            sign_content(params, SignRule::Request),
            "B=1&a_b=3&ab=4&b=2"
        );
    }
}
