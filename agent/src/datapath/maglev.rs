//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of `M` (prime) entries
//! in which every backend owns close to `M/N` entries, filled from per-backend permutations so
//! that adding or removing one backend changes close to the ideal `1/N` of the entries — the
//! flows a table entry stood for move, the others keep their backend.
//!
//! Invariant: the table depends only on the backends' addresses (not on ids or order), so every
//! node computes the same table and an outside load balancer spraying a flow's packets over
//! several nodes still reaches one backend.

/// 64-bit FNV-1a: a fixed, portable hash (the table must not depend on the process).
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The Maglev table of size `m` (a prime) for backends named by `names` (any stable bytes, e.g.
/// address and port): entry `i` is the index into `names` of the backend that owns it. Empty when
/// there are no backends.
pub fn table(names: &[Vec<u8>], m: usize) -> Vec<usize> {
    if names.is_empty() || m == 0 {
        return Vec::new();
    }
    // Filled in the order of the names, not of the caller's list, so the order does not matter.
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|a, b| names[*a].cmp(&names[*b]));
    let perms: Vec<(usize, usize)> = order
        .iter()
        .map(|&i| {
            let n = &names[i];
            let offset = (fnv1a(n, 0x5eed_0001) % m as u64) as usize;
            let skip = (fnv1a(n, 0x5eed_0002) % (m as u64 - 1)) as usize + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0usize; names.len()];
    let mut entry = vec![usize::MAX; m];
    let mut filled = 0;
    'fill: loop {
        for (i, &(offset, skip)) in perms.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m;
            while entry[c] != usize::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            entry[c] = order[i];
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    entry
}

/// The fraction of entries that name a different backend in `after` than in `before` (each a
/// table over names; entries compared by name).
pub fn moved(before: &[&[u8]], after: &[&[u8]]) -> f64 {
    let n = before.len().min(after.len());
    if n == 0 {
        return 0.0;
    }
    let changed = (0..n).filter(|i| before[*i] != after[*i]).count();
    changed as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: usize = 4093;

    fn names(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("10.244.{}.{}:8080", i / 200, i % 200 + 2).into_bytes())
            .collect()
    }

    fn by_name<'a>(t: &[usize], names: &'a [Vec<u8>]) -> Vec<&'a [u8]> {
        t.iter().map(|i| names[*i].as_slice()).collect()
    }

    #[test]
    fn every_backend_owns_close_to_its_share() {
        let n = names(10);
        let t = table(&n, M);
        assert_eq!(t.len(), M);
        for i in 0..10 {
            let owned = t.iter().filter(|e| **e == i).count();
            assert!((400..=420).contains(&owned), "backend {i} owns {owned}");
        }
    }

    #[test]
    fn the_table_does_not_depend_on_the_order_of_backends() {
        let n = names(7);
        let mut reversed = n.clone();
        reversed.reverse();
        assert_eq!(
            by_name(&table(&n, M), &n),
            by_name(&table(&reversed, M), &reversed)
        );
    }

    #[test]
    fn removing_or_adding_one_backend_moves_close_to_one_nth_of_the_flows() {
        let all = names(10);
        let fewer = all[..9].to_vec();
        let before = table(&all, M);
        let after = table(&fewer, M);
        let moved = moved(&by_name(&before, &all), &by_name(&after, &fewer));
        assert!(moved < 0.13, "removing 1 of 10 moved {moved}");
        assert!(
            moved >= 0.09,
            "at least the removed backend's share moves: {moved}"
        );
    }
}
