//! What one change did and how long each part took: the line printed per
//! change and the `--json` event. Pure.

use std::collections::BTreeMap;
use std::time::Duration;

use broker_pins::Digest;

/// Milliseconds of each part of one change, from the file's write to the
/// new pods ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Timings {
    /// From the last write of a changed file (its mtime) to the watcher
    /// handing the batch on (debounce and quiet period included).
    pub seen_ms: f64,
    /// Rebuilding the changed images (cached layers, the changed ones).
    pub build_ms: f64,
    /// Pushing what the registry lacks.
    pub push_ms: f64,
    /// Rendering in memory and applying the objects that differ.
    pub apply_ms: f64,
    /// Waiting until the applied workloads are ready.
    pub rollout_ms: f64,
    /// From the write to the objects applied.
    pub write_to_applied_ms: f64,
    /// From the write to ready: the figure a developer feels.
    pub write_to_ready_ms: f64,
}

/// Milliseconds, with a tenth's precision.
pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10_000.0).round() / 10.0
}

/// One change, as applied.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ChangeReport {
    /// The files that changed, relative to their tree where possible.
    pub files: Vec<String>,
    /// The images rebuilt, with their new digests.
    pub images: BTreeMap<String, Digest>,
    /// Images whose deps stage was rebuilt (a requirements file, a
    /// Dockerfile).
    pub deps_rebuilt: Vec<String>,
    /// The layers built anew (the rest came from the cache), as
    /// `image/layer`.
    pub layers_built: Vec<String>,
    /// The objects applied (`Kind/name`).
    pub applied: Vec<String>,
    /// The workloads rolled (`name`).
    pub workloads: Vec<String>,
    /// How long each part took.
    pub timings: Timings,
}

impl ChangeReport {
    /// The one line printed per change, e.g. `src/python/restapi/RestAPI.py
    /// → python-base@sha256:1234567890ab → restapi, lm: ready 212 ms after
    /// the write (seen 80, build 30, push 20, apply 40, rollout 42)`.
    pub fn line(&self) -> String {
        let files = match self.files.as_slice() {
            [] => "(no file)".to_owned(),
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} and {} more", rest.len()),
        };
        let images: Vec<String> = self
            .images
            .iter()
            .map(|(name, digest)| {
                let text = digest.to_string();
                format!("{name}@{}", text.get(..19).unwrap_or(&text))
            })
            .collect();
        let images = if images.is_empty() {
            "config".to_owned()
        } else {
            images.join(", ")
        };
        let rolled = if self.workloads.is_empty() {
            if self.applied.is_empty() {
                "nothing to apply".to_owned()
            } else {
                self.applied.join(", ")
            }
        } else {
            self.workloads.join(", ")
        };
        let t = &self.timings;
        format!(
            "{files} → {images} → {rolled}: ready {:.0} ms after the write (seen {:.0}, build {:.0}, push {:.0}, apply {:.0}, rollout {:.0})",
            t.write_to_ready_ms, t.seen_ms, t.build_ms, t.push_ms, t.apply_ms, t.rollout_ms
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_line_names_files_images_workloads_and_each_part() {
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let report = ChangeReport {
            files: vec!["src/python/restapi/RestAPI.py".into()],
            images: BTreeMap::from([("python-base".to_owned(), digest)]),
            applied: vec!["Deployment/restapi".into(), "Deployment/lm".into()],
            workloads: vec!["restapi".into(), "lm".into()],
            timings: Timings {
                seen_ms: 80.0,
                build_ms: 30.4,
                push_ms: 20.0,
                apply_ms: 40.0,
                rollout_ms: 42.0,
                write_to_applied_ms: 170.0,
                write_to_ready_ms: 212.4,
            },
            ..ChangeReport::default()
        };
        assert_eq!(
            report.line(),
            "src/python/restapi/RestAPI.py → python-base@sha256:abababababab → restapi, lm: ready 212 ms after the write (seen 80, build 30, push 20, apply 40, rollout 42)"
        );
        let config = ChangeReport {
            files: vec!["db/init.d/01.sql".into(), "db/init.d/02.sql".into()],
            applied: vec!["ConfigMap/db-init-abc".into()],
            ..ChangeReport::default()
        };
        assert!(
            config.line().starts_with(
                "db/init.d/01.sql and 1 more → config → ConfigMap/db-init-abc: ready 0 ms"
            ),
            "{}",
            config.line()
        );
    }
}
