//! How consistent the Maglev backend choice is: the share of flows that change backend when one
//! backend is removed or added, against the ideal `1/N` (only the flows of the backend that left,
//! or the new backend's share, move). Measured on the tables the agent programs
//! (`switchyard::datapath::maglev`), whose entries stand for equal shares of the flow hash space.
use switchyard::datapath::maglev;
use switchyard_abi::MAGLEV_TABLE_SIZE;

use crate::report::{Better, Scenario};

/// The scenario, filled.
pub fn scenario() -> Scenario {
    let mut s = Scenario::new(
        "maglev_moved",
        "Flows that change backend when one backend changes (Maglev)",
        "% of flows",
        Better::Lower,
        Some("ideal"),
    )
    .method("Maglev tables of 4,093 entries over N backends (named by address:port), before and after removing or adding one; the share of entries whose backend changed. Ideal: the removed backend's share, 1/N, or the added one's, 1/(N+1).");
    for n in [3usize, 10, 100] {
        let names = |k: usize| -> Vec<Vec<u8>> {
            (0..k)
                .map(|i| format!("10.244.{}.{}:8080", i / 200, i % 200 + 2).into_bytes())
                .collect()
        };
        let (all, more) = (names(n), names(n + 1));
        let table = |names: &[Vec<u8>]| -> Vec<Vec<u8>> {
            maglev::table(names, usize::from(MAGLEV_TABLE_SIZE))
                .into_iter()
                .map(|i| names[i].clone())
                .collect()
        };
        let (t_all, t_fewer, t_more) = (table(&all), table(&all[1..]), table(&more));
        let share = |a: &[Vec<u8>], b: &[Vec<u8>]| {
            let (a, b): (Vec<&[u8]>, Vec<&[u8]>) = (
                a.iter().map(Vec::as_slice).collect(),
                b.iter().map(Vec::as_slice).collect(),
            );
            100.0 * maglev::moved(&a, &b)
        };
        let removed = format!("remove 1 of {n}");
        s.add("maglev", &removed, &[share(&t_all, &t_fewer)]);
        s.add("ideal", &removed, &[100.0 / n as f64]);
        let added = format!("add 1 to {n}");
        s.add("maglev", &added, &[share(&t_all, &t_more)]);
        s.add("ideal", &added, &[100.0 / (n + 1) as f64]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_one_of_ten_moves_close_to_a_tenth_of_the_flows() {
        let s = scenario();
        let f = s
            .figures
            .iter()
            .find(|f| f.mode == "maglev" && f.case == "remove 1 of 10")
            .expect("figure");
        let moved = f.summary.samples[0];
        assert!((9.0..13.0).contains(&moved), "{moved}%");
    }
}
