#!/usr/bin/env bash
# Runs the linearizability checker (tests/support/history.rs, this commit's)
# on the code from before tokens were sealed and leases kept in the entry's
# place: WIT 0.6.0, commit 79cf0cb. Three threads, 300 operations each, on
# one memcached, checked four ways: the whole workload, without forged
# swaps, without leases, without either. Shows that the checker finds what
# the review found there (docs/semantics.md, 15). Not part of CI: it builds
# a second tree (about five minutes on two cores).
#
#   tests/checker-on-0.6.0.sh            # target directory: target/checker-0.6.0
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
old=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$old" >/dev/null 2>&1 || true; rm -rf "$old"' EXIT
git worktree add --detach --force "$old" 79cf0cb >/dev/null

# The checker and its dependencies, as they are now.
cp tests/support/history.rs "$old/tests/support/history.rs"
sed -i 's/^mod apps;$/mod apps;\npub mod history;/' "$old/tests/support/lib.rs"
sed -i 's/^\[build-dependencies\]$/stateright = "=0.31.0"\nrustix = { version = "1", default-features = false, features = ["std", "time"] }\n\n[build-dependencies]/' \
    "$old/tests/Cargo.toml"
# 0.6.0's fill returns nothing: it reported every fill as done.
perl -0pi -e 's/(\.fill\(&tenant, &key, format!\("v\{v\}"\)\.as_bytes\(\), None, &token\)\s*)\.map\(Ret::Stored\)/$1.map(|()| Ret::Stored(true))/' \
    "$old/tests/support/history.rs"
grep -q 'map(|()| Ret::Stored(true))' "$old/tests/support/history.rs"
# Switches to leave forged swaps or leases out of the workload.
perl -0pi -e 's/( +)73\.\.=75 => \{/$1 73..=75 if std::env::var_os("NO_FORGED").is_some() => true,\n$1 76..=89 if std::env::var_os("NO_LEASES").is_some() => true,\n$1 73..=75 => {/' \
    "$old/tests/support/history.rs"
grep -q NO_LEASES "$old/tests/support/history.rs"
cat > "$old/tests/scenarios/checker.rs" <<'EOF'
use std::time::Duration;
use tenant_cache_tests::history::{check, run_workload};
use tenant_cache_tests::{MemcachedProcess, backend_with_timeout};

#[test]
fn checker() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend_with_timeout(&[server.address()], Duration::from_secs(5))?;
    tenant_cache_tests::cache(&backend, "history")?.set("warm-up", "k", b"v", None)?;
    let mut all = Vec::new();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..3u32)
            .map(|thread| {
                let backend = backend.clone();
                scope.spawn(move || {
                    let mut cache = tenant_cache_tests::cache(&backend, "history").expect("an instance");
                    let mut mine = Vec::new();
                    run_workload(&mut cache, thread, 300, |record| mine.push(record));
                    mine
                })
            })
            .collect();
        for thread in threads {
            all.extend(thread.join().expect("a thread"));
        }
    });
    let checked = check(&all, false);
    for violation in &checked.violations {
        eprintln!("{violation}\n");
    }
    println!(
        "CHECKED {} operations, {} register histories, {} not linearizable",
        checked.operations, checked.histories, checked.violations.len()
    );
    Ok(())
}
EOF
echo "mod checker;" >> "$old/tests/scenarios/main.rs"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target/checker-0.6.0}"
for leave_out in "" NO_FORGED NO_LEASES "NO_FORGED NO_LEASES"; do
    vars=()
    for var in $leave_out; do vars+=("$var=1"); done
    result=$(cd "$old" && env "${vars[@]}" cargo test --release -q -p tenant-cache-tests --test scenarios checker \
        -- --nocapture checker::checker 2>"$old/stderr" | grep '^CHECKED') || { cat "$old/stderr"; exit 1; }
    without=${leave_out:-nothing}
    without=${without/NO_FORGED/forged swaps}
    without=${without/ NO_LEASES/, leases}
    without=${without/NO_LEASES/leases}
    echo "0.6.0, workload without ${without}: ${result#CHECKED }"
done
