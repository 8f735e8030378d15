//! `broker-images render`: the catalogue, an environment and images.lock
//! to Kubernetes YAML in a directory (for `kubectl apply -k`) or on stdout.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::cli::RenderArgs;

/// Renders, prints warnings on stderr, writes the output.
pub(crate) fn run(args: &RenderArgs, json: bool) -> anyhow::Result<()> {
    let rendered = broker_render::render(&broker_render::Inputs {
        lock: &args.lock,
        source: &args.source,
        environment: &args.environment,
        env_file: args.env_file.as_deref(),
        manifests: &args.catalogue,
        require_pinned: args.require_pinned,
    })
    .context("render failed")?;
    for warning in &rendered.warnings {
        crate::reporter::warning(json, warning);
    }
    if args.out == Path::new("-") {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(rendered.to_stream().as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout")?;
        return Ok(());
    }
    rendered.write_dir(&args.out).context("render failed")?;
    let objects = rendered.objects.len();
    super::print_result(
        json,
        &serde_json::json!({
            "out": args.out.display().to_string(),
            "objects": objects,
            "warnings": rendered.warnings,
        }),
        &[format!(
            "rendered {objects} objects to {} (apply with `kubectl apply -k {}`)",
            args.out.display(),
            args.out.display()
        )],
    );
    Ok(())
}
