//! The documentation is complete and shows the code that is tested.

/// The client protocol page points to the client package the end-to-end suite uses, and
/// no longer carries a copy of a helper that could drift from it.
#[test]
fn the_client_page_points_to_the_tested_package() {
    let page = include_str!("../docs/client-protocol.md");
    let package = include_str!("../clients/js/package.json");
    let e2e = include_str!("../e2e/package.json");
    assert!(package.contains("\"name\": \"@realtime-bridge/client\""));
    assert!(
        e2e.contains("\"@realtime-bridge/client\": \"file:../clients/js\""),
        "the e2e suite uses the package"
    );
    assert!(page.contains("[`clients/js`](../clients/js)"), "the page points to the package");
    assert!(
        !page.contains("export function resumable"),
        "no second copy of the helper in the docs"
    );
}

/// Every environment variable `config.rs` reads is in the operations page's table.
#[test]
fn every_configuration_variable_is_documented() {
    let config = include_str!("../src/config.rs");
    let page = include_str!("../docs/operations.md");
    // `get("X")`, `parse(get, "X", …)`, `one_of(get, "X", …)` as rustfmt lays it out, and the
    // `("KAFKA_…", "property")` table of the security settings.
    let read: Vec<String> = quoted_after(config, "get(\"")
        .chain(quoted_after(config, "(get, \""))
        .chain(quoted_after(config, "get,\n        \""))
        .map(str::to_owned)
        .chain(quoted_after(config, "(\"KAFKA_").map(|rest| format!("KAFKA_{rest}")))
        .filter(|name| name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
        .collect();
    assert!(read.len() > 30, "the scan finds what config.rs reads: {read:?}");
    for var in ["KAFKA_SECURITY_PROTOCOL", "KAFKA_GROUP_PROTOCOL", "KAFKA_SSL_CA_LOCATION"] {
        assert!(read.iter().any(|r| r == var), "the scan sees {var}");
    }
    let missing: Vec<&String> = read.iter().filter(|var| !page.contains(&format!("`{var}`"))).collect();
    assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
}

/// Every metric `metrics.rs` registers is listed in the operations page.
#[test]
fn every_metric_is_documented() {
    let metrics = include_str!("../src/metrics.rs");
    let page = include_str!("../docs/operations.md");
    let names: Vec<&str> = quoted_after(metrics, "!(\"realtime_")
        .chain(quoted_after(metrics, "!(\n        \"realtime_"))
        .collect();
    assert!(names.len() > 20, "the scan finds what metrics.rs registers: {names:?}");
    let missing: Vec<String> = names
        .into_iter()
        .map(|n| n.to_owned())
        .filter(|n| !page.contains(&format!("`{n}")) && !page.contains(&format!("realtime_{n}")))
        .collect();
    assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
}

/// The text between `prefix` and the next `"` or `\\`, at every occurrence of `prefix`.
fn quoted_after<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.match_indices(prefix).filter_map(move |(i, _)| {
        let rest = &text[i + prefix.len()..];
        rest.find(['"', '\\']).map(|end| &rest[..end])
    })
}
