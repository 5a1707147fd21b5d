//! The exact module and the relaxation constants against `../shared/reference/`.

use neuralrg::exact;
use neuralrg::ising::Relaxation;
use neuralrg::lattice::Lattice;
use serde_json::Value;

fn reference(name: &str) -> Vec<Value> {
    let dir = std::env::var("NEURALRG_REFERENCE")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference").into());
    let path = std::path::Path::new(&dir).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str::<Vec<Value>>(&text).unwrap()
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1e-300)
}

#[test]
fn exact_values_match_every_reference_entry() {
    let mut checked = 0;
    for file in ["ising2d_exact.json", "ising1d_exact.json"] {
        for e in reference(file) {
            let (l, d, t) = (
                e["L"].as_u64().unwrap() as usize,
                e["d"].as_u64().unwrap() as usize,
                e["T"].as_f64().unwrap(),
            );
            let ex = exact::ising(l, d, t);
            let f = |k: &str| e[k].as_f64().unwrap();
            assert!(
                close(ex.ln_z, f("lnZ"), 1e-9),
                "lnZ L={l} d={d} T={t}: {} vs {}",
                ex.ln_z,
                f("lnZ")
            );
            assert!(close(
                ex.free_energy_per_site,
                f("free_energy_per_site"),
                1e-9
            ));
            assert!(
                close(ex.energy_per_site, f("energy_per_site"), 1e-9),
                "E L={l} d={d} T={t}: {} vs {}",
                ex.energy_per_site,
                f("energy_per_site")
            );
            assert!(
                close(ex.specific_heat_per_site, f("specific_heat_per_site"), 1e-9),
                "C L={l} d={d} T={t}: {} vs {}",
                ex.specific_heat_per_site,
                f("specific_heat_per_site")
            );
            if l >= 4 {
                let rel = Relaxation::new(Lattice::new(l, d).unwrap(), t).unwrap();
                assert!(
                    close(rel.fix, f("relaxation_fix"), 1e-9),
                    "fix L={l} d={d} T={t}"
                );
                assert!(close(rel.ln_z_x, f("lnZx"), 1e-9));
                assert!(close(rel.loss_bound(), f("loss_bound"), 1e-9));
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} reference entries");
}

#[test]
fn enumeration_energies_match_kaufman_at_l4() {
    for e in reference("ising2d_L4_enumeration.json") {
        let ex = exact::ising(4, 2, e["T"].as_f64().unwrap());
        assert!(close(
            ex.energy_per_site,
            e["energy_per_site"].as_f64().unwrap(),
            1e-9
        ));
        assert!(close(
            ex.specific_heat_per_site,
            e["specific_heat_per_site"].as_f64().unwrap(),
            1e-9
        ));
    }
}
