//! report.json: the `Report` tree, pretty-printed.
use std::io::Write;

use crate::report::Report;

pub fn render(report: &Report, out: &mut dyn Write) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)?;
    Ok(())
}
