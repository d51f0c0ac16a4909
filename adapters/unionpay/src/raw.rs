//! UnionPay's synchronous answers: a `k=v&k=v` body that is **not** URL-encoded (the inline
//! certificate keeps its `+`, `/` and CRLF, and decoding `+` to a space would break its
//! signature). Fields split on `&` and at the first `=`; a value in `{…}` or `[…]` may hold
//! `&` and `=` of its own (the gateway nests some reserved fields so).

/// Why an answer body is not a field list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RawError {
    /// A part has no `=`, or an empty key.
    #[error("malformed field at byte {0}")]
    Malformed(usize),
    /// A key appears twice: which value was signed would be ambiguous.
    #[error("field {0} appears twice")]
    Duplicate(String),
    /// A `{` or `[` is never closed.
    #[error("unbalanced brackets")]
    Unbalanced,
}

/// The fields of a raw answer, in their order on the wire.
pub fn parse(body: &str) -> Result<Vec<(&str, &str)>, RawError> {
    let mut fields: Vec<(&str, &str)> = Vec::new();
    let mut start = 0;
    let mut depth = 0_usize;
    for (index, byte) in body.bytes().enumerate() {
        match byte {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1).ok_or(RawError::Unbalanced)?,
            b'&' if depth == 0 => {
                push(body, start, index, &mut fields)?;
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(RawError::Unbalanced);
    }
    push(body, start, body.len(), &mut fields)?;
    Ok(fields)
}

/// Adds the part `body[from..to]` as a field (an empty part adds nothing).
fn push<'a>(
    body: &'a str,
    from: usize,
    to: usize,
    fields: &mut Vec<(&'a str, &'a str)>,
) -> Result<(), RawError> {
    let part = body.get(from..to).ok_or(RawError::Malformed(from))?;
    if part.is_empty() {
        return Ok(());
    }
    let (key, value) = part.split_once('=').ok_or(RawError::Malformed(from))?;
    if key.is_empty() {
        return Err(RawError::Malformed(from));
    }
    if fields.iter().any(|(k, _)| *k == key) {
        return Err(RawError::Duplicate(key.to_owned()));
    }
    fields.push((key, value));
    Ok(())
}

/// The value of `key`.
pub fn field<'a>(fields: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_crlf_and_nested_values_survive() {
        let fields = parse("a=x+y/z\r\nw&b={c=1&d=2}&e=").unwrap_or_default();
        assert_eq!(fields, [("a", "x+y/z\r\nw"), ("b", "{c=1&d=2}"), ("e", "")]);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert_eq!(parse("a=1&a=2"), Err(RawError::Duplicate("a".into())));
        assert_eq!(parse("a=1&b"), Err(RawError::Malformed(4)));
        assert_eq!(parse("=1"), Err(RawError::Malformed(0)));
        assert_eq!(parse("a={1"), Err(RawError::Unbalanced));
        assert_eq!(parse("a=}"), Err(RawError::Unbalanced));
    }
}
