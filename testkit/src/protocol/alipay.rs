//! Alipay classic gateway (`gateway.do`) rules: the RSA2 sign string (A.3, A.8) and Beijing
//! timestamps.

use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// The content type of `gateway.do` calls and of notifications.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded;charset=utf-8";

/// Beijing time, the zone of every Alipay timestamp.
const BEIJING: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => UtcOffset::UTC,
};

/// Which parameters a sign string leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signed {
    /// A request: everything sent except `sign` (A.3: `sign_type` **is** signed).
    Request,
    /// A trade notification (V1 rule, A.8): everything except `sign` and `sign_type`.
    Notification,
}

/// The sign string: non-empty parameters minus the excluded ones, sorted by key in byte order,
/// joined as raw `key=value` pairs with `&`.
pub fn sign_string<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    rule: Signed,
) -> String {
    let mut kept: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(key, value)| !key.is_empty() && !value.is_empty())
        .filter(|(key, _)| match rule {
            Signed::Request => *key != "sign",
            Signed::Notification => *key != "sign" && *key != "sign_type",
        })
        .collect();
    kept.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::new();
    for (index, (key, value)) in kept.iter().enumerate() {
        if index > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time.
pub fn beijing_time(at: OffsetDateTime) -> Option<String> {
    at.to_offset(BEIJING)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .ok()
}

/// Reads a `yyyy-MM-dd HH:mm:ss` Beijing time.
pub fn parse_beijing_time(text: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(
        text,
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    )
    .ok()
    .map(|t| t.assume_offset(BEIJING))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_strings_keep_sign_type_and_drop_empty_values() {
        let params = [
            ("timestamp", "2024-05-13 17:49:20"),
            ("sign", "xyz"),
            ("app_id", "2021000122671080"),
            ("sign_type", "RSA2"),
            ("notify_url", ""),
            ("charset", "utf-8"),
        ];
        assert_eq!(
            sign_string(params, Signed::Request),
            "app_id=2021000122671080&charset=utf-8&sign_type=RSA2&timestamp=2024-05-13 17:49:20"
        );
        assert_eq!(
            sign_string(params, Signed::Notification),
            "app_id=2021000122671080&charset=utf-8&timestamp=2024-05-13 17:49:20"
        );
    }

    #[test]
    fn beijing_times_round_trip() {
        let at = time::macros::datetime!(2024-05-13 09:49:20 UTC);
        assert_eq!(beijing_time(at).as_deref(), Some("2024-05-13 17:49:20"));
        assert_eq!(parse_beijing_time("2024-05-13 17:49:20"), Some(at));
        assert_eq!(parse_beijing_time("2024-05-13T17:49:20"), None);
    }
}
