//! Tidy: outside the registry, the core never names a concrete provider or method. Provider
//! facts (methods, payer needs, payment-code formats, names, colours, statement files) are
//! declared by each adapter crate and read through `src/registry.rs`, so a new wallet plugs in
//! at one place. This test reads the core's source as text and fails on:
//!
//! - an adapter crate (`moongate_adapter_…`);
//! - a concrete `ProviderKind::…` or `PaymentMethod::…` variant (`ALL`, `parse` are fine);
//! - a provider's name in code or a string literal (comments and `#[cfg(test)]` modules are
//!   not read).

use std::path::{Path, PathBuf};

/// The one module that maps provider kinds to adapter crates.
const REGISTRY: &str = "src/registry.rs";

/// Not the library: the binary's command line and its demo (which configures one account of
/// each provider). The test doubles live in `testkit/`, outside `src/`.
const NOT_CORE: &[&str] = &["src/main.rs", "src/demo.rs"];

/// Provider names the core must not spell (lower-case).
const NAMES: &[&str] = &[
    "alipay",
    "wechat",
    "weixin",
    "micromessenger",
    "unionpay",
    "jdpay",
    "douyin",
];

/// Reasoned exceptions: (file, text on the line).
const ALLOWED: &[(&str, &str)] = &[
    // The contract's `NextAction::WechatJsapi` and `NextAction::AlipayJsapi` are contract
    // variants; the page renders each with the bridge call the variant exists for.
    ("src/cashier/page.rs", "NextAction::WechatJsapi"),
    ("src/cashier/page.rs", "WeixinJSBridge"),
    ("src/cashier/page.rs", "NextAction::AlipayJsapi"),
    ("src/cashier/page.rs", "AlipayJSBridge"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line: what precedes a `//` comment (a `//` inside a string literal is rare
/// enough in this code base to be caught by review).
fn code_of(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    match line.find("// ").and_then(|at| line.get(..at)) {
        Some(before) if !before.contains('"') => before,
        _ => line,
    }
}

fn variant_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let tail = rest.get(at + prefix.len()..).unwrap_or_default();
        let name: &str = tail
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '*'))
            .next()
            .unwrap_or_default();
        if name.starts_with(|c: char| c.is_ascii_uppercase() || c == '*') && name != "ALL" {
            found.push(name);
        }
        rest = tail;
    }
    found
}

/// Every offence in one file's text: (line number, what).
fn offences(relative: &str, text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = code_of(line);
        if code.trim().is_empty() {
            continue;
        }
        if ALLOWED
            .iter()
            .any(|(file, needle)| *file == relative && code.contains(needle))
        {
            continue;
        }
        let number = index + 1;
        if code.contains("moongate_adapter_") {
            out.push((number, "names an adapter crate".to_owned()));
        }
        for prefix in ["ProviderKind::", "PaymentMethod::"] {
            for variant in variant_after(code, prefix) {
                out.push((number, format!("names {prefix}{variant}")));
            }
        }
        let lower = code.to_lowercase();
        for name in NAMES {
            if lower.contains(name) {
                out.push((number, format!("spells the provider name {name:?}")));
            }
        }
    }
    out
}

#[test]
fn the_core_names_no_provider_outside_the_registry() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut report = Vec::new();
    let mut registry_names_providers = false;
    for path in &files {
        let relative = path
            .strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if relative == REGISTRY {
            registry_names_providers = !offences(&relative, &text).is_empty();
            continue;
        }
        // Test modules kept in their own file (`#[cfg(test)] mod tests;`) are tests.
        if NOT_CORE.iter().any(|p| relative.starts_with(p)) || relative.ends_with("/tests.rs") {
            continue;
        }
        for (line, what) in offences(&relative, &text) {
            report.push(format!("{relative}:{line}: {what}"));
        }
    }
    // The checker itself must see what it looks for: the registry does name providers.
    assert!(
        registry_names_providers,
        "the checker finds nothing in {REGISTRY}"
    );
    assert!(
        report.is_empty(),
        "provider-specific code outside {REGISTRY} (declare it in the adapter crate's facts and \
         read it through the registry):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_checker_catches_each_kind_of_offence() {
    let bad = "use moongate_adapter_alipay::X;\n\
               let m = PaymentMethod::WechatH5;\n\
               match k { ProviderKind::Alipay => 1 }\n\
               let s = \"open WeChat\";\n\
               use PaymentMethod::*;\n";
    let found = offences("src/x.rs", bad);
    let lines: Vec<usize> = found.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, vec![1, 1, 2, 2, 3, 3, 4, 5], "{found:?}");
    let fine = "// Alipay in a comment\n\
                let all = PaymentMethod::ALL;\n\
                let k = ProviderKind::parse(name);\n\
                #[cfg(test)]\n\
                mod tests { const M: PaymentMethod = PaymentMethod::AlipayQr; }\n";
    assert_eq!(offences("src/x.rs", fine), Vec::new());
}

#[test]
fn the_library_does_not_link_the_test_doubles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| {
            !NOT_CORE
                .iter()
                .any(|p| path.ends_with(p.trim_start_matches("src/")))
        })
        .filter(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .contains("moongate_testkit")
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "library modules using the test doubles: {offenders:?}"
    );
}

#[test]
fn the_sandboxes_never_use_the_adapters() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testkit");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    assert!(
        manifest.contains("moongate-contract"),
        "read the wrong manifest"
    );
    assert!(
        !manifest.contains("moongate-adapter") && !manifest.contains("moongate.workspace"),
        "testkit/Cargo.toml depends on an adapter crate or the core"
    );
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 5, "found only {} testkit files", files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.contains("moongate_adapter_"),
            "{} uses an adapter crate",
            path.display()
        );
    }
}
