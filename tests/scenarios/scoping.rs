//! Capability scoping: a component cannot leave its application prefix,
//! whatever keys it crafts, and the host refuses keys memcached would
//! misread.

use tenant_cache_host::{CacheError, Grant, RuntimeOptions};
use tenant_cache_tests::{MemcachedProcess, backend, cache, misbehaving};

#[test]
fn a_component_cannot_escape_its_application_prefix() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    server.raw_set("foreign", "untouched")?;
    let backend = backend(&[&server])?;
    let mut victim = cache(&backend, "victim")?;
    victim.set("Lisboa", "/info", b"secret", None)?;
    // The live key space: the server held an item before the pool was
    // recorded, so routes are tagged. (The LRU crawler that lists keys can
    // miss items it is moving: list again until all three show.)
    let mut victim_keys: Vec<String> = Vec::new();
    for _ in 0..50 {
        victim_keys = server
            .keys()?
            .into_iter()
            .filter(|key| key.starts_with("tc:victim:~"))
            .collect();
        if victim_keys.len() >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(victim_keys.len(), 3, "{victim_keys:?} of {:?}", server.keys()?);

    let mut attacker = misbehaving(RuntimeOptions::default())?.instantiate(Grant::new(backend.clone(), "attacker"))?;
    // Reads of the victim's keys, absolute or relative, only ever reach the
    // attacker's own prefix.
    let mut probes: Vec<String> = victim_keys.clone();
    // Relative as the victim's component sent them: without the prefix,
    // and without the tag the pool puts after it (this server held an item
    // before the pool was recorded, so its routes are tagged).
    let relative = |key: &String| {
        let key = key.trim_start_matches("tc:victim:");
        let key = key
            .strip_prefix('~')
            .map_or(key, |tagged| tagged.split_once(':').map_or(key, |(_, rel)| rel));
        key.to_string()
    };
    probes.extend(victim_keys.iter().map(relative));
    probes.extend(["foreign", "../victim/a", "..", "tc:", "tc:victim:", "*"].map(String::from));
    for key in &probes {
        assert_eq!(attacker.get("escape", key)?, None, "read {key:?} outside its prefix");
        attacker.set("escape", key, b"pwned", None)?;
    }
    // Keys memcached would misread are refused before anything is sent.
    let long = "k".repeat(197);
    let tagged = victim_keys[0].trim_start_matches("tc:victim:").to_string();
    assert!(tagged.starts_with('~'), "{tagged}");
    for key in [
        tagged.as_str(),
        "~",
        "",
        "a b",
        "x\r\nflush_all",
        "x\r\ndelete foreign",
        "\0",
        "\t",
        "é",
        "\u{7f}",
        long.as_str(),
    ] {
        for result in [
            attacker.get("escape", key).map(drop),
            attacker.set("escape", key, b"x", None),
        ] {
            match result {
                Err(CacheError::Internal(message)) => assert!(message.contains("InvalidKey"), "{key:?}: {message}"),
                other => panic!("{key:?}: expected the host to refuse the key, got {other:?}"),
            }
        }
    }
    assert_eq!(victim.get("Lisboa", "/info")?.as_deref(), Some(&b"secret"[..]));
    assert_eq!(server.raw_get("foreign")?.as_deref(), Some("untouched"));
    for key in server.keys()? {
        // The victim's, the attacker's, the foreign item and the host's
        // record of the pool.
        let own =
            key.starts_with("tc:victim:") || key.starts_with("tc:attacker:") || key == "foreign" || key == "tc:pool";
        assert!(
            own && key.len() <= 250 && key.bytes().all(|byte| byte.is_ascii_graphic()),
            "{key:?}"
        );
    }
    Ok(())
}
