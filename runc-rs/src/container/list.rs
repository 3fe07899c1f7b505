//! `list`: every container under `--root`, as runc's table or JSON.

use std::path::Path;

use crate::state::{list_ids, ContainerState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

pub fn list(root: &Path, format: ListFormat, quiet: bool) -> String {
    let states: Vec<ContainerState> = list_ids(root)
        .iter()
        .filter_map(|id| ContainerState::load(root, id).ok())
        .collect();
    if quiet {
        return states.iter().map(|s| format!("{}\n", s.id)).collect();
    }
    let public: Vec<_> = states.iter().map(|s| s.public(root)).collect();
    match format {
        ListFormat::Json => {
            // runc prints `null` for no containers.
            if public.is_empty() {
                "null\n".into()
            } else {
                format!("{}\n", serde_json::to_string(&public).expect("serializes"))
            }
        }
        ListFormat::Table => {
            let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
                .map(String::from)
                .to_vec()];
            for p in &public {
                rows.push(vec![
                    p.id.to_owned(),
                    p.pid.to_string(),
                    p.status.to_string(),
                    p.bundle.display().to_string(),
                    p.created.to_owned(),
                    p.owner.clone(),
                ]);
            }
            table(&rows)
        }
    }
}

/// Go's tabwriter with minwidth 12, padding 3, as runc configures it.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len() + 3)
                .max()
                .unwrap_or(0)
                .max(12)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == cols {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}
