//! The hostile-input corpus: every string below is tried as a tenant, as a
//! key and as an application name; values of awkward sizes are tried too.
//! Each round trip returns exactly what was stored or a typed error, no
//! other tenant or application loses or sees anything, memcached keeps
//! every unrelated item (no command was injected), and nothing traps.

use tenant_cache_host::{CacheError, TenantCache};
use tenant_cache_tests::{MemcachedProcess, backend, cache};

/// At least 40 strings, each one a way naive schemes break.
fn corpus() -> Vec<String> {
    let mut strings: Vec<String> = [
        "",
        " ",
        "  ",
        "a b",
        "\r\n",
        "\r",
        "\n",
        "\t",
        "\0",
        "a\0b",
        "\x7f",
        "\x1b[31m",
        ":",
        "::",
        "a:",
        ":a",
        "a:b",
        "/",
        "//",
        "a/b",
        "%",
        "%25",
        "%3A",
        "%zz",
        "#",
        "#0",
        "*",
        "?",
        "\\",
        "\"",
        "'",
        "flush_all",
        "flush_all\r\n",
        "delete a",
        "stats",
        "get a b c",
        "mg a v",
        "ms a 2\r\nxx",
        "version",
        "quit",
        "e\u{301}",
        "\u{5d0}\u{5d1}\u{202e}abc",
        "🦀",
        "👩\u{200d}👩\u{200d}👧",
        "\u{feff}",
        "ǅ",
        "a:1/x",
        "x:5/y",
        "tc:",
        "tc:default:a",
        "n:Lisboa",
        "d:Lisboa:/info",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    strings.extend([250, 251, 1000, 100_000].map(|n| "k".repeat(n)));
    strings.push(format!("{}é", "k".repeat(249)));
    strings
}

/// Entries that must survive everything the corpus does.
fn plant(control: &mut TenantCache) -> Result<(), CacheError> {
    for n in 0..5 {
        control.set("control", &format!("k{n}"), format!("v{n}").as_bytes(), None)?;
    }
    Ok(())
}

fn check(control: &mut TenantCache, server: &MemcachedProcess, case: &str) -> anyhow::Result<()> {
    for n in 0..5 {
        let value = control.get("control", &format!("k{n}"))?;
        assert_eq!(
            value,
            Some(format!("v{n}").into_bytes()),
            "control entry lost after {case}"
        );
    }
    assert_eq!(
        server.raw_get("unrelated")?.as_deref(),
        Some("item"),
        "unrelated item lost after {case}"
    );
    Ok(())
}

#[test]
fn hostile_tenants_keys_and_apps_round_trip_exactly() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    server.raw_set("unrelated", "item")?;
    let backend = backend(&[&server])?;
    let mut control = cache(&backend, "control-app")?;
    plant(&mut control)?;
    let strings = corpus();
    assert!(strings.len() >= 40);
    let mut main = cache(&backend, "main")?;
    for (index, string) in strings.iter().enumerate() {
        let case = format!("case {index} ({:?})", string.chars().take(20).collect::<String>());
        // As a tenant and as a key, next to its neighbours in the corpus.
        let value = format!("value of {index}").into_bytes();
        main.set(string, string, &value, None)?;
        main.set(string, "neighbour", b"n", None)?;
        main.set("neighbour", string, b"m", None)?;
        assert_eq!(main.get(string, string)?, Some(value.clone()), "{case}");
        // As an application name, with the same tenant and key.
        let mut app = cache(&backend, string)?;
        assert_eq!(app.get(string, string)?, None, "{case}: another app saw main's entry");
        app.set(string, string, b"app", None)?;
        assert_eq!(app.get(string, string)?.as_deref(), Some(&b"app"[..]), "{case}");
        assert_eq!(
            main.get(string, string)?,
            Some(value),
            "{case}: app write leaked into main"
        );
        // Clearing it clears only it.
        main.clear(string)?;
        assert_eq!(main.get(string, string)?, None, "{case}");
        assert_eq!(main.get("neighbour", string)?.as_deref(), Some(&b"m"[..]), "{case}");
        assert_eq!(app.get(string, string)?.as_deref(), Some(&b"app"[..]), "{case}");
        app.clear_all()?;
        check(&mut control, &server, &case)?;
    }
    for key in server.keys()? {
        assert!(
            key.len() <= 250 && key.bytes().all(|byte| byte.is_ascii_graphic()),
            "{key:?}"
        );
    }
    Ok(())
}

#[test]
fn awkward_value_sizes_round_trip_or_fail_typed() -> anyhow::Result<()> {
    const MIB: usize = 1024 * 1024;
    let server = MemcachedProcess::start()?;
    server.raw_set("unrelated", "item")?;
    let backend = backend(&[&server])?;
    let mut control = cache(&backend, "control-app")?;
    plant(&mut control)?;
    let mut cache = cache(&backend, "main")?;
    for size in [0, 1, MIB / 2, MIB - 1024, MIB - 1, MIB, MIB + 1, 10 * MIB] {
        let value: Vec<u8> = (0..size).map(|n| (n % 251) as u8).collect();
        cache.set("t", "before", b"kept", None)?;
        match cache.set("t", "sized", &value, None) {
            Ok(()) => assert_eq!(cache.get("t", "sized")?, Some(value), "{size} bytes"),
            Err(CacheError::ValueTooLarge { size: reported, limit }) => {
                assert!(size > MIB - 1024, "{size} bytes refused");
                assert_eq!((reported, limit), (size as u64, MIB as u64));
                assert_eq!(
                    cache.get("t", "sized")?.map(|v| v.len()),
                    None,
                    "a refused set left a value"
                );
            }
            Err(other) => panic!("{size} bytes: {other:?}"),
        }
        assert_eq!(cache.get("t", "before")?.as_deref(), Some(&b"kept"[..]), "{size} bytes");
        check(&mut control, &server, &format!("{size} bytes"))?;
    }
    Ok(())
}
