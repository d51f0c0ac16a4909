//! Small helpers the test doubles share: HTML escaping and random ids.

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// `len` random characters from `[0-9A-Za-z]`.
pub fn random_alnum(len: usize) -> String {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = vec![0_u8; len];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes
        .iter()
        .map(|b| {
            char::from(
                ALPHABET
                    .get(usize::from(*b) % ALPHABET.len())
                    .copied()
                    .unwrap_or(b'0'),
            )
        })
        .collect()
}

/// A random id with a prefix (`bill_…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_alnum(24))
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_and_quotes_are_escaped() {
        assert_eq!(
            super::escape(r#"<a href="x" title='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn ids_are_random_alphanumerics() {
        let a = super::new_id("bill");
        assert!(a.starts_with("bill_") && a.len() == 29, "{a}");
        assert_ne!(a, super::new_id("bill"));
    }
}
