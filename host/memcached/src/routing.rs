//! Which server of a pool owns a route: rendezvous (highest random
//! weight) hashing over a hash fixed by this crate, so every build of the
//! host, on every machine, routes every tenant to the same server.
//!
//! The hash is 64-bit FNV-1a followed by the SplitMix64 finalizer; a
//! server's score for a route mixes the hash of the server's address as
//! configured with the hash of the route. Removing a server moves only
//! the routes it owned.

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The SplitMix64 finalizer.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A route, hashed once for scoring against every server.
#[derive(Clone, Copy)]
pub struct Route(u64);

impl Route {
    pub fn new(route: &[u8]) -> Route {
        Route(mix(fnv1a(route)))
    }

    /// `server`'s score for this route: the highest score owns it.
    pub fn score(self, server: &str) -> u64 {
        mix(fnv1a(server.as_bytes()) ^ self.0)
    }
}

/// The index in `servers` of the server that owns `route`; 0 for an
/// empty or one-server pool.
pub fn owner(route: Route, servers: &[String]) -> usize {
    if servers.len() < 2 {
        return 0;
    }
    (0..servers.len())
        .max_by_key(|&index| route.score(&servers[index]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{}", 11211 + i)).collect()
    }

    #[test]
    fn routing_is_pinned() {
        // If this table changes, two builds of the host would disagree
        // about where a tenant lives: never change it.
        let three = pool(3);
        let routes = ["Lisboa", "Barcelona", "", "tenant-1", "tenant-2", "#0123abcd"];
        let owners: Vec<usize> = routes
            .iter()
            .map(|route| owner(Route::new(route.as_bytes()), &three))
            .collect();
        assert_eq!(owners, [0, 1, 0, 0, 0, 0]);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn routes_spread_and_move_minimally() {
        let four = pool(4);
        let mut three = four.clone();
        three.remove(1);
        let mut counts = [0usize; 4];
        for n in 0..4000 {
            let route = Route::new(format!("tenant-{n}").as_bytes());
            let before = owner(route, &four);
            counts[before] += 1;
            if before != 1 {
                assert_eq!(three[owner(route, &three)], four[before]);
            }
        }
        assert!(counts.iter().all(|&count| count > 800), "{counts:?}");
    }
}
