//! `broker-images render`: the catalogue, an environment and images.lock
//! to Kubernetes YAML in a directory (for `kubectl apply -k`) or on stdout.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::cli::RenderArgs;

/// The credentials of a generated pull Secret: the Docker client
/// configuration (`$DOCKER_CONFIG/config.json`, `credsStore`,
/// `credHelpers`), as `build --push` and `push` find them without
/// `--username`.
pub(crate) struct DockerConfigPullCredentials;

impl broker_render::PullCredentialLookup for DockerConfigPullCredentials {
    fn lookup(
        &self,
        credential_key: &str,
    ) -> Result<Option<broker_render::PullCredentials>, String> {
        // Its errors never hold a secret (broker-registry's rule).
        let resolved = broker_registry::CredentialSource::default()
            .resolve(credential_key)
            .map_err(|e| e.to_string())?;
        match resolved.credentials {
            None => Ok(None),
            Some(broker_registry::Credentials::Basic { username, password }) => {
                Ok(Some(broker_render::PullCredentials { username, password }))
            }
            Some(broker_registry::Credentials::IdentityToken(_)) => Err(format!(
                "{} holds an identity token, which nodes cannot pull with; log in with a user name and password or access token",
                resolved.origin
            )),
        }
    }
}

/// Renders, prints warnings on stderr, writes the output.
pub(crate) fn run(args: &RenderArgs, json: bool) -> anyhow::Result<()> {
    let rendered = broker_render::render_with_pull_credentials(
        &broker_render::Inputs {
            lock: &args.lock,
            source: &args.source,
            environment: &args.environment,
            env_file: args.env_file.as_deref(),
            manifests: &args.catalogue,
            require_pinned: args.require_pinned,
        },
        &DockerConfigPullCredentials,
    )
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
