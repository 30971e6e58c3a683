//! `tenant-cache component --standalone`: the tenant-cache component
//! composed with the memcached provider, whose exports satisfy its
//! capability import: one component whose only imports are WASI 0.2's, for
//! runtimes that link nothing of ours. `--into APP.wasm` plugs that into an
//! app's `wasi:keyvalue` imports as well; with `--provider`, the provider
//! alone into an app that imports the capability itself. Composition is `wasm-compose`'s
//! (what `wac plug` does); this file checks what it is given and what
//! comes out.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// What a standalone component may leave for the runtime to provide.
const WASI: &str = "wasi:";

/// What is composed, and what an app given with `--into` must import.
pub enum Composition {
    /// tenant-cache and the provider; an app is plugged into by its
    /// `wasi:keyvalue` imports.
    Standalone,
    /// The provider alone; an app is plugged into by its import of the
    /// capability (`tenant-cache:cache/memcached`, as a hostile or a
    /// composed app imports it).
    Provider,
}

/// The composition, plugged into `app` if one is given. `cache` is the
/// tenant-cache component, `provider` the memcached provider.
pub fn compose(what: Composition, cache: &[u8], provider: &[u8], app: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    let dir = tempfile::tempdir().context("making a scratch directory for the composition")?;
    let write = |name: &str, bytes: &[u8]| -> anyhow::Result<PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let (composed, socket, plugged) = match what {
        Composition::Standalone => {
            let cache = write("tenant-cache.wasm", cache)?;
            let provider = write("memcached-provider.wasm", provider)?;
            let standalone = plug(&cache, &provider).context("composing tenant-cache with the memcached provider")?;
            (standalone, "wasi:keyvalue/", "tenant-cache")
        }
        Composition::Provider => (
            provider.to_vec(),
            "tenant-cache:cache/memcached@",
            "the memcached provider",
        ),
    };
    let Some(app) = app else {
        return Ok(composed);
    };
    let app_imports = imports(&std::fs::read(app).with_context(|| format!("reading {}", app.display()))?)
        .with_context(|| format!("{} is not a component", app.display()))?;
    if !app_imports.iter().any(|import| import.starts_with(socket)) {
        let interface = socket.trim_end_matches(['/', '@']);
        bail!(
            "{} imports no {interface} interface: there is nothing to plug {plugged} into",
            app.display()
        );
    }
    // The app's WASI imports are the composition's: it shares the
    // provider's sandbox. Said once, for what it imports.
    let shared: Vec<&str> = [
        (
            "wasi:sockets/",
            "with the network the runtime grants, reach memcached around tenant-cache",
        ),
        (
            "wasi:cli/environment",
            "read the provider's configuration (TENANT_CACHE_TOKEN_SECRET included)",
        ),
    ]
    .into_iter()
    .filter(|(prefix, _)| app_imports.iter().any(|import| import.starts_with(prefix)))
    .map(|(_, what)| what)
    .collect();
    if !shared.is_empty() {
        eprintln!(
            "tenant-cache: note: {} shares the provider's sandbox: it can {} (docs/trust.md, \"Without our host\")",
            app.display(),
            shared.join(", and ")
        );
    }
    let composed = write("composed.wasm", &composed)?;
    plug(app, &composed).with_context(|| format!("plugging {plugged} into {}", app.display()))
}

/// `socket` with every import that `plug` exports taken from it, checked:
/// what is left to import is WASI's alone.
fn plug(socket: &Path, plug: &Path) -> anyhow::Result<Vec<u8>> {
    let config = wasm_compose::config::Config {
        definitions: vec![plug.to_path_buf()],
        ..Default::default()
    };
    let composed = wasm_compose::composer::ComponentComposer::new(socket, &config)
        .compose()
        .map_err(|error| anyhow::anyhow!("{error:#}"))?;
    let left: Vec<String> = imports(&composed)?
        .into_iter()
        .filter(|import| !import.starts_with(WASI) || import.starts_with("wasi:keyvalue/"))
        .collect();
    if !left.is_empty() {
        bail!(
            "the composition still imports {}, which nothing of a WASI runtime provides (tenant-cache serves \
             wasi:keyvalue store, atomics and batch at @0.2.0-draft and @0.2.0-draft2)",
            left.join(", ")
        );
    }
    Ok(composed)
}

/// The names a component imports at its top level.
fn imports(component: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload? {
            wasmparser::Payload::ModuleSection { .. } | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    names.push(import?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}
