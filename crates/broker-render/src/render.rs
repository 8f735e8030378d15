//! From catalogue, environment, credentials and lock to the final objects:
//! a chain of small transforms, each over the whole object list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use broker_pins::Lock;
use serde_json::{Map, Value, json};

use crate::catalogue::{Catalogue, SourceObject, read_generator_files};
use crate::environment::{
    EXTERNAL_SUFFIX, IngressRoute, IngressSettings, LoadedEnvironment, Profile, WorkloadSettings,
    scalar,
};
use crate::error::RenderError;
use crate::hash;
use crate::secrets;
use crate::{Inputs, Object, Rendered};

pub use broker_pins::ownership::{MANAGED_BY_LABEL, NAME_LABEL, PART_OF_LABEL};
use broker_pins::ownership::{MANAGED_BY_VALUE, PART_OF_VALUE, apply_rank};

const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "CustomResourceDefinition",
];

/// Workload kinds whose pod template is at `spec.template.spec`.
const WORKLOADS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet", "Job"];

/// Generated names: base name → name with suffix (or the existing Secret).
#[derive(Default)]
struct Names {
    config_maps: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
}

/// A generated or catalogue object on its way out, with the name its file
/// and `app.kubernetes.io/name` label take (the name before any suffix).
struct Pending {
    object: SourceObject,
    base: String,
}

pub(crate) fn render(
    inputs: &Inputs<'_>,
    pull_credentials: &dyn crate::PullCredentialLookup,
) -> Result<Rendered, RenderError> {
    let environment = LoadedEnvironment::read(inputs.environment)?;
    let catalogue = Catalogue::read(inputs.manifests)?;
    let lock = Lock::read(inputs.lock)?.ok_or_else(|| RenderError::NoLock {
        path: inputs.lock.to_path_buf(),
    })?;
    check_environment_against_catalogue(&environment, &catalogue)?;

    // Generators first: every reference below is rewritten to their names.
    let mut names = Names::default();
    let mut pending = generate_config_maps(&catalogue, &environment, inputs.source, &mut names)?;
    let credentials = read_credentials(inputs.env_file, &catalogue, &environment)?;
    pending.extend(generate_secrets(
        &catalogue,
        &environment,
        &credentials,
        &mut names,
    ));

    let mut warnings = Vec::new();
    let context = Context {
        inputs,
        lock: &lock,
        catalogue: &catalogue,
        environment: &environment,
        names: &names,
        defined: catalogue
            .objects
            .iter()
            .map(|o| (o.kind().to_owned(), o.name().to_owned()))
            .collect(),
        unpinned: std::cell::RefCell::new(Vec::new()),
    };
    pending.extend(transform_catalogue(&context)?);
    let unpinned = context.unpinned.into_inner();
    generate_pull_secret(&mut pending, &environment, pull_credentials)?;
    if !unpinned.is_empty() {
        if inputs.require_pinned {
            let mut images: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for u in &unpinned {
                images.entry(u.image.as_str()).or_default().push(format!(
                    "{} in {}",
                    u.workload,
                    u.path.display()
                ));
            }
            return Err(RenderError::Unpinned {
                lock: inputs.lock.to_path_buf(),
                verb: if images.len() == 1 { "has" } else { "have" },
                command: mirror_command(images.keys().copied(), &lock, inputs.lock),
                images: images
                    .iter()
                    .map(|(image, users)| format!("`{image}` ({})", users.join(", ")))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let images: std::collections::BTreeSet<&str> =
            unpinned.iter().map(|u| u.image.as_str()).collect();
        warnings.push(format!(
            "{} not mirrored in {}, left unpinned: run `{}`",
            images
                .iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(", "),
            inputs.lock.display(),
            mirror_command(images.iter().copied(), &lock, inputs.lock)
        ));
    }
    Ok(Rendered {
        objects: finish(pending, &environment.env.namespace),
        warnings,
    })
}

/// A third-party image the lock has no mirror of, where it is used.
struct UnpinnedUse {
    image: String,
    workload: String,
    path: PathBuf,
}

/// The one command that mirrors `images` into the registry the lock's
/// broker images were pushed to (`HOST/PREFIX` when the lock has none).
fn mirror_command<'i>(
    images: impl Iterator<Item = &'i str>,
    lock: &Lock,
    lock_path: &Path,
) -> String {
    let registry = lock
        .images
        .iter()
        .find_map(|(name, image)| {
            let reference: broker_pins::Reference = image.reference.parse().ok()?;
            broker_pins::RegistryPrefix::of_image(&reference, name)
        })
        .map_or_else(|| "HOST/PREFIX".to_owned(), |p| p.to_string());
    format!(
        "broker-images mirror {} --registry {registry} --lock {}",
        images.collect::<Vec<_>>().join(" "),
        lock_path.display()
    )
}

/// What every transform may consult.
struct Context<'a> {
    /// Unmirrored third-party images met so far (said together at the end).
    unpinned: std::cell::RefCell<Vec<UnpinnedUse>>,
    inputs: &'a Inputs<'a>,
    lock: &'a Lock,
    catalogue: &'a Catalogue,
    environment: &'a LoadedEnvironment,
    names: &'a Names,
    /// Every (kind, name) the catalogue defines.
    defined: BTreeSet<(String, String)>,
}

/// The environment speaks only of things the catalogue has, and holds no
/// credential.
fn check_environment_against_catalogue(
    environment: &LoadedEnvironment,
    catalogue: &Catalogue,
) -> Result<(), RenderError> {
    let env = &environment.env;
    let credential_keys = catalogue.credential_keys();
    if let Some(key) = environment
        .values
        .keys()
        .find(|k| credential_keys.contains(*k))
    {
        return Err(RenderError::invalid(
            &environment.path,
            format!(
                "env.{key} is a credential: it belongs in the --env-file (or an existing Secret), never in a ConfigMap"
            ),
        ));
    }
    let of_kind = |kind: &str| -> BTreeSet<String> {
        catalogue
            .objects
            .iter()
            .filter(|o| o.kind() == kind)
            .map(|o| o.name().to_owned())
            .collect()
    };
    let claims = of_kind("PersistentVolumeClaim");
    let missing: Vec<&str> = claims
        .iter()
        .filter(|c| !env.storage.contains_key(*c))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(RenderError::invalid(
            &environment.path,
            format!(
                "`storage` has no entry for the catalogue's claim(s) {}",
                missing.join(", ")
            ),
        ));
    }
    if let Some(extra) = env.storage.keys().find(|k| !claims.contains(*k)) {
        return Err(RenderError::invalid(
            &environment.path,
            format!("storage.{extra}: the catalogue has no PersistentVolumeClaim of that name"),
        ));
    }
    let services = of_kind("Service");
    if let Some((extra, _)) = env
        .expose
        .0
        .iter()
        .find(|(k, _)| !services.contains(&k.value))
    {
        return Err(RenderError::at_line(
            &environment.path,
            extra.referenced.line(),
            format!(
                "expose.{}: the catalogue has no Service of that name (it has {})",
                extra.value,
                services.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if let Some(extra) = env
        .existing_secrets
        .keys()
        .find(|g| !catalogue.file.secrets.iter().any(|s| &s.name == *g))
    {
        return Err(RenderError::invalid(
            &environment.path,
            format!("existingSecrets.{extra}: the catalogue generates no Secret of that name"),
        ));
    }
    check_settings_against_catalogue(environment, catalogue, &credential_keys)?;
    let namespaces = of_kind("Namespace").len();
    if namespaces != 1 {
        return Err(RenderError::invalid(
            &catalogue.path,
            format!("the catalogue must hold exactly one Namespace, it holds {namespaces}"),
        ));
    }
    Ok(())
}

/// The port names of a catalogue Service.
fn port_names(service: &SourceObject) -> Vec<&str> {
    service.value["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect()
}

/// `workloads`, `ingress` and `expose.*.ports` name only workloads,
/// Services and ports the catalogue has; each mistake at its line.
fn check_settings_against_catalogue(
    environment: &LoadedEnvironment,
    catalogue: &Catalogue,
    credential_keys: &BTreeSet<String>,
) -> Result<(), RenderError> {
    let env = &environment.env;
    let path = &environment.path;
    let find = |kind: &str, name: &str| {
        catalogue
            .objects
            .iter()
            .find(|o| o.kind() == kind && o.name() == name)
    };
    let names_of = |kind: &str| {
        catalogue
            .objects
            .iter()
            .filter(|o| o.kind() == kind)
            .map(SourceObject::name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (name, settings) in &env.workloads.0 {
        let line = name.referenced.line();
        let Some(deployment) = find("Deployment", &name.value) else {
            return Err(RenderError::at_line(
                path,
                line,
                format!(
                    "workloads.{}: the catalogue has no workload of that name (it has {})",
                    name.value,
                    names_of("Deployment")
                ),
            ));
        };
        if let Some(replicas) = &settings.replicas
            && replicas.value > 1
            && deployment.value["spec"]["strategy"]["type"] == "Recreate"
        {
            return Err(RenderError::at_line(
                path,
                replicas.referenced.line(),
                format!(
                    "workloads.{}.replicas: {} runs one pod on its data (strategy Recreate); give 0 or 1",
                    name.value, name.value
                ),
            ));
        }
        if let Some((key, _)) = settings
            .env
            .0
            .iter()
            .find(|(k, _)| credential_keys.contains(&k.value))
        {
            return Err(RenderError::at_line(
                path,
                key.referenced.line(),
                format!(
                    "workloads.{}.env.{} is a credential: it belongs in the --env-file (or an existing Secret)",
                    name.value, key.value
                ),
            ));
        }
    }
    let service_port = |service: &serde_saphyr::Spanned<String>,
                        field: &str,
                        port: &str,
                        line: u64|
     -> Result<(), RenderError> {
        let Some(object) = find("Service", &service.value) else {
            return Err(RenderError::at_line(
                path,
                service.referenced.line(),
                format!(
                    "{field}.{}: the catalogue has no Service of that name (it has {})",
                    service.value,
                    names_of("Service")
                ),
            ));
        };
        let ports = port_names(object);
        if ports.contains(&port) {
            Ok(())
        } else {
            Err(RenderError::at_line(
                path,
                line,
                format!(
                    "{field}.{}: Service `{}` has no port named `{port}` (it has {})",
                    service.value,
                    service.value,
                    ports.join(", ")
                ),
            ))
        }
    };
    if let Some(ingress) = &env.ingress {
        for (service, route) in &ingress.services.0 {
            let (port, line) = route
                .port
                .as_ref()
                .map_or((DEFAULT_INGRESS_PORT, service.referenced.line()), |p| {
                    (p.value.as_str(), p.referenced.line())
                });
            service_port(service, "ingress.services", port, line)?;
        }
    }
    for (service, exposure) in &env.expose.0 {
        let service = &service.value;
        let Some(ports) = &exposure.ports else {
            continue;
        };
        let Some(object) = find("Service", service) else {
            // Said without a line by the caller's check of `expose`.
            continue;
        };
        let known = port_names(object);
        for port in ports {
            if !known.contains(&port.value.as_str()) {
                return Err(RenderError::at_line(
                    path,
                    port.referenced.line(),
                    format!(
                        "expose.{service}.ports: Service `{service}` has no port named `{}` (it has {})",
                        port.value,
                        known.join(", ")
                    ),
                ));
            }
        }
        if let Some((port, number)) = exposure
            .node_ports
            .iter()
            .find(|(p, _)| !ports.iter().any(|q| &q.value == *p))
        {
            return Err(RenderError::at_line(
                path,
                number.referenced.line(),
                format!(
                    "expose.{service}.nodePorts.{port}: `{port}` is not among expose.{service}.ports; add it there or drop its node port"
                ),
            ));
        }
        let external = format!("{service}{EXTERNAL_SUFFIX}");
        if find("Service", &external).is_some() {
            return Err(RenderError::invalid(
                path,
                format!(
                    "expose.{service}.ports would add a Service `{external}`, which the catalogue already has; rename that Service"
                ),
            ));
        }
    }
    Ok(())
}

/// The Service port an Ingress routes to when the environment names none.
const DEFAULT_INGRESS_PORT: &str = "http";

/// The ConfigMaps `catalogue.yaml` declares, named as kustomize would.
fn generate_config_maps(
    catalogue: &Catalogue,
    environment: &LoadedEnvironment,
    source: &Path,
    names: &mut Names,
) -> Result<Vec<Pending>, RenderError> {
    let mut out = Vec::new();
    for generator in &catalogue.file.config_maps {
        let mut entries = read_generator_files(&catalogue.path, generator, source)?;
        if generator.environment {
            for (key, value) in &environment.values {
                if entries.data.insert(key.clone(), value.clone()).is_some() {
                    return Err(RenderError::invalid(
                        &environment.path,
                        format!(
                            "env.{key} clashes with a file of ConfigMap `{}`",
                            generator.name
                        ),
                    ));
                }
            }
        }
        let suffix = hash::config_map_suffix(&entries.data, &entries.binary_data);
        let name = format!("{}-{suffix}", generator.name);
        let mut object =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        // An empty map is left out, as kustomize does (the hash depends on it).
        if !entries.data.is_empty() {
            object["data"] = json!(entries.data);
        }
        if !entries.binary_data.is_empty() {
            object["binaryData"] = json!(entries.binary_data);
        }
        names.config_maps.insert(generator.name.clone(), name);
        out.push(Pending {
            object: SourceObject {
                path: catalogue.path.clone(),
                value: object,
            },
            base: generator.name.clone(),
        });
    }
    Ok(out)
}

/// The env file's credentials, when some Secret is generated from them;
/// placeholders are refused for the cluster profile.
fn read_credentials(
    env_file: Option<&Path>,
    catalogue: &Catalogue,
    environment: &LoadedEnvironment,
) -> Result<secrets::Credentials, RenderError> {
    let needed = catalogue
        .file
        .secrets
        .iter()
        .any(|s| !environment.env.existing_secrets.contains_key(&s.name));
    if !needed {
        return Ok(secrets::Credentials::new());
    }
    let Some(path) = env_file else {
        return Err(RenderError::invalid(
            &environment.path,
            "the credentials Secret is generated from --env-file (see environments/env.sample); pass one, or name an existing Secret in `existingSecrets`",
        ));
    };
    let credentials = secrets::read_env_file(path, &catalogue.credential_keys())?;
    let placeholders = secrets::placeholders(&credentials);
    if environment.env.profile == Profile::Cluster && !placeholders.is_empty() {
        return Err(RenderError::invalid(
            path,
            format!(
                "{} hold placeholder values (empty, CHANGEME or <…>); the cluster profile needs real credentials",
                placeholders.join(", ")
            ),
        ));
    }
    Ok(credentials)
}

/// The Secrets `catalogue.yaml` declares, unless the environment names an
/// existing one.
fn generate_secrets(
    catalogue: &Catalogue,
    environment: &LoadedEnvironment,
    credentials: &secrets::Credentials,
    names: &mut Names,
) -> Vec<Pending> {
    let mut out = Vec::new();
    for generator in &catalogue.file.secrets {
        if let Some(existing) = environment.env.existing_secrets.get(&generator.name) {
            names
                .secrets
                .insert(generator.name.clone(), existing.clone());
            continue;
        }
        let data: BTreeMap<String, String> = generator
            .keys
            .iter()
            .filter_map(|k| {
                credentials
                    .get(k)
                    .map(|v| (k.clone(), hash::base64(v.as_bytes())))
            })
            .collect();
        let suffix = hash::secret_suffix("Opaque", &data);
        let name = format!("{}-{suffix}", generator.name);
        let object = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name}, "data": data,
        });
        names.secrets.insert(generator.name.clone(), name);
        out.push(Pending {
            object: SourceObject {
                path: catalogue.path.clone(),
                value: object,
            },
            base: generator.name.clone(),
        });
    }
    out
}

/// The catalogue's own objects for the environment: the namespace named,
/// claims and Services shaped by the profile, pods pinned and rewired.
fn transform_catalogue(context: &Context<'_>) -> Result<Vec<Pending>, RenderError> {
    let environment = &context.environment.env;
    let mut out = Vec::new();
    for source in &context.catalogue.objects {
        let mut object = source.clone();
        let base = source.name().to_owned();
        match source.kind() {
            "Namespace" => {
                object.value["metadata"]["name"] = json!(environment.namespace);
                if environment.profile == Profile::Cluster {
                    // Every pod of the cluster profile meets "restricted"
                    // (tested): the API server holds later changes to it.
                    // Single-node's node directories (hostPath) need
                    // "privileged", the default.
                    let metadata = ensure_object(&mut object.value, "metadata");
                    let labels = ensure_object(metadata, "labels");
                    labels[POD_SECURITY_ENFORCE] = json!("restricted");
                    labels[POD_SECURITY_ENFORCE_VERSION] = json!(POD_SECURITY_VERSION);
                }
            }
            "PersistentVolumeClaim" => {
                if environment.profile == Profile::SingleNode {
                    // Its pods mount the node directory instead.
                    continue;
                }
                // Every claim has an entry: checked against the catalogue.
                if let Some(storage) = environment.storage.get(&base) {
                    claim_for_cluster(&mut object.value, storage);
                }
            }
            "Service" => {
                if let Some(exposure) = environment.expose.get(&base) {
                    if let Some(ports) = &exposure.ports {
                        // The catalogue's Service stays in-cluster with
                        // every port; only the ports named leave it.
                        let mut external = object.clone();
                        let name = format!("{base}{EXTERNAL_SUFFIX}");
                        external.value["metadata"]["name"] = json!(name);
                        if let Some(list) = external.value["spec"]["ports"].as_array_mut() {
                            list.retain(|p| {
                                ports.iter().any(|q| p["name"].as_str() == Some(&q.value))
                            });
                        }
                        expose(
                            &mut external,
                            exposure,
                            environment.profile,
                            &context.environment.path,
                        )?;
                        out.push(Pending {
                            object: external,
                            base: name,
                        });
                    } else {
                        expose(
                            &mut object,
                            exposure,
                            environment.profile,
                            &context.environment.path,
                        )?;
                    }
                }
            }
            kind if WORKLOADS.contains(&kind) => {
                // Half-supported is worse than refused: start, stop,
                // restart and status wait on, scale and read Deployments.
                if kind != "Deployment" {
                    return Err(RenderError::invalid(
                        &source.path,
                        format!(
                            "{kind} `{base}`: broker-images starts, stops, restarts and waits on Deployments only; make it a Deployment (with `strategy: Recreate` for one pod per volume, as db and mq)"
                        ),
                    ));
                }
                let missing = || {
                    RenderError::invalid(
                        &source.path,
                        format!("{kind} `{base}` has no spec.template.spec mapping"),
                    )
                };
                let template = object
                    .value
                    .pointer_mut("/spec/template")
                    .filter(|t| t.is_object())
                    .ok_or_else(missing)?;
                add_common_labels(template, &base);
                let pod = template
                    .get_mut("spec")
                    .filter(|s| s.is_object())
                    .ok_or_else(missing)?;
                let workload = Workload {
                    path: &source.path,
                    name: &base,
                };
                rewrite_pod(pod, context, &workload)?;
                if let Some(settings) = environment.workloads.get(&base) {
                    apply_workload_settings(&mut object.value, settings);
                }
            }
            _ => {}
        }
        out.push(Pending { object, base });
    }
    if let Some(ingress) = &environment.ingress {
        for (service, route) in &ingress.services.0 {
            out.push(Pending {
                object: SourceObject {
                    path: context.environment.path.clone(),
                    value: ingress_for(&service.value, route, ingress),
                },
                base: service.value.clone(),
            });
        }
    }
    Ok(out)
}

/// The environment's settings for one workload over the catalogue's
/// Deployment (checked against the catalogue already).
fn apply_workload_settings(deployment: &mut Value, settings: &WorkloadSettings) {
    if let Some(replicas) = &settings.replicas {
        deployment["spec"]["replicas"] = json!(replicas.value);
    }
    let pod = &mut deployment["spec"]["template"]["spec"];
    if let Some(selector) = &settings.node_selector {
        pod["nodeSelector"] = json!(selector);
    }
    if let Some(tolerations) = &settings.tolerations {
        pod["tolerations"] = json!(tolerations);
    }
    if let Some(affinity) = &settings.affinity {
        pod["affinity"] = affinity.clone();
    }
    let Some(containers) = pod["containers"].as_array_mut() else {
        return;
    };
    for container in containers {
        if let Some(resources) = &settings.resources {
            for (field, values) in [
                ("requests", &resources.requests),
                ("limits", &resources.limits),
            ] {
                for (key, value) in values {
                    container["resources"][field][key] = json!(scalar(value));
                }
            }
        }
        for (name, value) in &settings.env.0 {
            let var = json!({"name": name.value, "value": scalar(value)});
            if !container["env"].is_array() {
                container["env"] = json!([]);
            }
            if let Some(vars) = container["env"].as_array_mut() {
                match vars.iter_mut().find(|v| v["name"] == name.value.as_str()) {
                    Some(existing) => *existing = var,
                    None => vars.push(var),
                }
            }
        }
    }
}

/// One Ingress routing `route.host` (and `route.path`) to a Service port.
fn ingress_for(service: &str, route: &IngressRoute, settings: &IngressSettings) -> Value {
    let port = route
        .port
        .as_ref()
        .map_or(DEFAULT_INGRESS_PORT, |p| p.value.as_str());
    let mut ingress = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": service},
        "spec": {
            "rules": [{
                "host": route.host,
                "http": {"paths": [{
                    "path": route.path.as_deref().unwrap_or("/"),
                    "pathType": "Prefix",
                    "backend": {"service": {"name": service, "port": {"name": port}}},
                }]},
            }],
        },
    });
    if !settings.annotations.is_empty() {
        ingress["metadata"]["annotations"] = json!(settings.annotations);
    }
    if let Some(class) = &settings.class_name {
        ingress["spec"]["ingressClassName"] = json!(class);
    }
    if let Some(secret) = &route.tls_secret {
        ingress["spec"]["tls"] = json!([{"hosts": [route.host], "secretName": secret}]);
    }
    ingress
}

/// Namespace and labels on every object, YAML, apply order.
fn finish(pending: Vec<Pending>, namespace: &str) -> Vec<Object> {
    let mut rendered: Vec<Object> = pending
        .into_iter()
        .map(|Pending { mut object, base }| {
            let kind = object.kind().to_owned();
            if !CLUSTER_SCOPED.contains(&kind.as_str()) {
                object.value["metadata"]["namespace"] = json!(namespace);
            }
            let label_name = if kind == "Namespace" {
                namespace
            } else {
                &base
            };
            add_common_labels(&mut object.value, label_name);
            Object {
                name: object.name().to_owned(),
                file_name: format!("{}-{base}.yaml", kind.to_ascii_lowercase()),
                secret: kind == "Secret",
                yaml: crate::yaml::to_yaml(&object.value),
                kind,
                value: object.value,
            }
        })
        .collect();
    rendered.sort_by(|a, b| {
        (apply_rank(&a.kind), &a.kind, &a.name).cmp(&(apply_rank(&b.kind), &b.kind, &b.name))
    });
    rendered
}

/// The three labels; `app.kubernetes.io/name` only where the catalogue
/// did not set it (a Service's name label is its workload's).
fn add_common_labels(object: &mut Value, name: &str) {
    let metadata = ensure_object(object, "metadata");
    let labels = ensure_object(metadata, "labels");
    if let Value::Object(labels) = labels {
        labels
            .entry(NAME_LABEL.to_owned())
            .or_insert_with(|| json!(name));
        labels.insert(PART_OF_LABEL.to_owned(), json!(PART_OF_VALUE));
        labels.insert(MANAGED_BY_LABEL.to_owned(), json!(MANAGED_BY_VALUE));
    }
}

fn ensure_object<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    if !value[key].is_object() {
        value[key] = Value::Object(Map::new());
    }
    &mut value[key]
}

/// The Namespace label with which Pod Security admission refuses pods
/// that break a level.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
/// The label pinning the version of the level's rules.
pub const POD_SECURITY_ENFORCE_VERSION: &str = "pod-security.kubernetes.io/enforce-version";
/// The version of the Pod Security Standards the pods are checked against
/// in the tests (the Kubernetes minor the output is validated for).
const POD_SECURITY_VERSION: &str = "v1.33";

/// Flux's kustomize-controller leaves an object with this annotation
/// (value [`FLUX_PRUNE_DISABLED`]) in place when it leaves the synced
/// directory or the Flux Kustomization is deleted.
pub const FLUX_PRUNE: &str = "kustomize.toolkit.fluxcd.io/prune";
/// [`FLUX_PRUNE`]'s value.
pub const FLUX_PRUNE_DISABLED: &str = "disabled";
/// Argo CD neither prunes (`Prune=false`) nor, when the Application is
/// deleted, deletes (`Delete=false`) an object with this annotation
/// (value [`ARGOCD_KEEP`]).
pub const ARGOCD_SYNC_OPTIONS: &str = "argocd.argoproj.io/sync-options";
/// [`ARGOCD_SYNC_OPTIONS`]'s value.
pub const ARGOCD_KEEP: &str = "Prune=false,Delete=false";

fn claim_for_cluster(claim: &mut Value, storage: &crate::environment::Storage) {
    // A claim holds the data: the GitOps tools that sync a rendered
    // directory must never delete it, whatever happens to the directory.
    let metadata = ensure_object(claim, "metadata");
    let annotations = ensure_object(metadata, "annotations");
    annotations[FLUX_PRUNE] = json!(FLUX_PRUNE_DISABLED);
    annotations[ARGOCD_SYNC_OPTIONS] = json!(ARGOCD_KEEP);
    let spec = ensure_object(claim, "spec");
    // The catalogue's modes stand unless the environment sets its own:
    // access modes are immutable, so a wrong default costs the claim.
    if let Some(modes) = &storage.access_modes {
        spec["accessModes"] = json!(modes);
    } else if !spec["accessModes"].is_array() {
        spec["accessModes"] = json!(["ReadWriteOnce"]);
    }
    if let Some(size) = &storage.size {
        spec["resources"] = json!({"requests": {"storage": size}});
    }
    if let Some(class) = &storage.storage_class {
        spec["storageClassName"] = json!(class);
    }
}

fn expose(
    service: &mut SourceObject,
    exposure: &crate::environment::Exposure,
    profile: Profile,
    env_path: &Path,
) -> Result<(), RenderError> {
    let name = service.name().to_owned();
    let value = &mut service.value;
    if !exposure.annotations.is_empty() {
        let metadata = ensure_object(value, "metadata");
        let annotations = ensure_object(metadata, "annotations");
        for (k, v) in &exposure.annotations {
            annotations[k] = json!(v);
        }
    }
    let spec = ensure_object(value, "spec");
    spec["type"] = json!(match profile {
        Profile::SingleNode => "NodePort",
        Profile::Cluster => "LoadBalancer",
    });
    let mut unused: BTreeSet<&String> = exposure.node_ports.keys().collect();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            let port_name = port
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(number) = exposure.node_ports.get(&port_name) {
                port.insert("nodePort".to_owned(), json!(number.value));
                unused.remove(&port_name);
            }
        }
    }
    if let Some(port) = unused.into_iter().next() {
        return Err(RenderError::at_line(
            env_path,
            exposure.node_ports[port].referenced.line(),
            format!("Service `{name}` has no port named `{port}`"),
        ));
    }
    Ok(())
}

/// The workload whose pod is being rewritten, for error messages.
struct Workload<'a> {
    path: &'a PathBuf,
    name: &'a str,
}

fn rewrite_pod(
    pod: &mut Value,
    context: &Context<'_>,
    workload: &Workload<'_>,
) -> Result<(), RenderError> {
    for list in ["initContainers", "containers"] {
        let Some(containers) = pod.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut() {
            if !container.is_object() {
                return Err(RenderError::invalid(
                    workload.path,
                    format!(
                        "workload `{}`: an entry of {list} is not a mapping",
                        workload.name
                    ),
                ));
            }
            let image = container["image"].as_str().unwrap_or_default().to_owned();
            container["image"] = json!(pin(&image, context, workload)?);
            if let Some(sources) = container.get_mut("envFrom").and_then(Value::as_array_mut) {
                for source in sources {
                    rename_ref(
                        source.pointer_mut("/configMapRef/name"),
                        "ConfigMap",
                        context,
                        workload,
                    )?;
                    rename_ref(
                        source.pointer_mut("/secretRef/name"),
                        "Secret",
                        context,
                        workload,
                    )?;
                }
            }
            if let Some(vars) = container.get_mut("env").and_then(Value::as_array_mut) {
                for var in vars {
                    rename_ref(
                        var.pointer_mut("/valueFrom/configMapKeyRef/name"),
                        "ConfigMap",
                        context,
                        workload,
                    )?;
                    rename_ref(
                        var.pointer_mut("/valueFrom/secretKeyRef/name"),
                        "Secret",
                        context,
                        workload,
                    )?;
                }
            }
        }
    }
    // Volumes that were claims and are node directories now.
    let mut host_paths = Vec::new();
    if let Some(volumes) = pod.get_mut("volumes").and_then(Value::as_array_mut) {
        for volume in volumes {
            rename_ref(
                volume.pointer_mut("/configMap/name"),
                "ConfigMap",
                context,
                workload,
            )?;
            rename_ref(
                volume.pointer_mut("/secret/secretName"),
                "Secret",
                context,
                workload,
            )?;
            if let Some(sources) = volume
                .pointer_mut("/projected/sources")
                .and_then(Value::as_array_mut)
            {
                for source in sources {
                    rename_ref(
                        source.pointer_mut("/configMap/name"),
                        "ConfigMap",
                        context,
                        workload,
                    )?;
                    rename_ref(
                        source.pointer_mut("/secret/name"),
                        "Secret",
                        context,
                        workload,
                    )?;
                }
            }
            if context.environment.env.profile == Profile::SingleNode
                && let Some(claim) = volume
                    .pointer("/persistentVolumeClaim/claimName")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            {
                let host_path = context
                    .environment
                    .env
                    .storage
                    .get(&claim)
                    .and_then(|s| s.host_path.clone())
                    .ok_or_else(|| {
                        RenderError::invalid(
                            workload.path,
                            format!(
                                "workload `{}` mounts claim `{claim}`, which the catalogue does not define",
                                workload.name
                            ),
                        )
                    })?;
                if let Value::Object(map) = volume {
                    map.remove("persistentVolumeClaim");
                    map.insert(
                        "hostPath".to_owned(),
                        json!({"path": host_path, "type": "DirectoryOrCreate"}),
                    );
                    if let Some(name) = map.get("name").and_then(Value::as_str) {
                        host_paths.push(name.to_owned());
                    }
                }
            }
        }
    }
    give_host_paths_the_fs_group(pod, &host_paths);
    if let Some(secret) = &context.environment.env.pull_secret {
        add_pull_secret(pod, secret);
    }
    Ok(())
}

/// Adds `name` to the pod's `imagePullSecrets` after those it has (the
/// catalogue's are kept, never replaced), once.
fn add_pull_secret(pod: &mut Value, name: &str) {
    if !pod["imagePullSecrets"].is_array() {
        pod["imagePullSecrets"] = json!([]);
    }
    if let Some(list) = pod["imagePullSecrets"].as_array_mut()
        && !list.iter().any(|s| s["name"] == name)
    {
        list.push(json!({ "name": name }));
    }
}

/// The pod specs of the workloads among `pending`.
fn pods_mut(pending: &mut [Pending]) -> impl Iterator<Item = &mut Value> {
    pending
        .iter_mut()
        .filter(|p| WORKLOADS.contains(&p.object.kind()))
        .filter_map(|p| p.object.value.pointer_mut("/spec/template/spec"))
}

/// The type of a generated pull Secret.
const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";

/// The environment's `generatedPullSecret`: a dockerconfigjson Secret with
/// the credentials of every registry the rendered pods pull from (and of
/// no other), named with its content hash like the other generated
/// Secrets and added to every pod. The images are pinned already, so the
/// hosts are exactly what the nodes will contact.
fn generate_pull_secret(
    pending: &mut Vec<Pending>,
    environment: &LoadedEnvironment,
    lookup: &dyn crate::PullCredentialLookup,
) -> Result<(), RenderError> {
    let Some(base) = &environment.env.generated_pull_secret else {
        return Ok(());
    };
    let path = &environment.path;
    let mut keys = BTreeSet::new();
    for pod in pods_mut(pending) {
        for list in ["initContainers", "containers"] {
            for container in pod[list].as_array().into_iter().flatten() {
                let image = container["image"].as_str().unwrap_or_default();
                // Pinned images only: an unmirrored third-party image left
                // as written is not from the registry the push used.
                if image.contains("@sha256:")
                    && let Ok(reference) = image.parse::<broker_pins::Reference>()
                {
                    keys.insert(reference.credential_key().to_owned());
                }
            }
        }
    }
    let mut auths = Map::new();
    for key in &keys {
        let found = lookup.lookup(key).map_err(|why| {
            RenderError::invalid(
                path,
                format!("generatedPullSecret `{base}`: credentials for {key}: {why}"),
            )
        })?;
        if let Some(credentials) = found {
            let auth = hash::base64(
                format!("{}:{}", credentials.username, credentials.password).as_bytes(),
            );
            auths.insert(
                key.clone(),
                json!({
                    "auth": auth,
                    "password": credentials.password,
                    "username": credentials.username,
                }),
            );
        }
    }
    if auths.is_empty() {
        return Err(RenderError::invalid(
            path,
            format!(
                "generatedPullSecret `{base}`: no credentials for {} in the Docker configuration the push used; log in there (`docker login HOST`) or name an existing Secret in `pullSecret` instead",
                keys.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let config = serde_json::to_string(&json!({ "auths": auths }))
        .map_err(|e| RenderError::invalid(path, format!("generatedPullSecret `{base}`: {e}")))?;
    let data: BTreeMap<String, String> = [(
        ".dockerconfigjson".to_owned(),
        hash::base64(config.as_bytes()),
    )]
    .into();
    let name = format!("{base}-{}", hash::secret_suffix(DOCKER_CONFIG_JSON, &data));
    for pod in pods_mut(pending) {
        add_pull_secret(pod, &name);
    }
    pending.push(Pending {
        object: SourceObject {
            path: path.clone(),
            value: json!({
                "apiVersion": "v1", "kind": "Secret", "type": DOCKER_CONFIG_JSON,
                "metadata": {"name": name}, "data": data,
            }),
        },
        base: base.clone(),
    });
    Ok(())
}

/// The name of the init container render adds on single-node so that the
/// pod's `fsGroup` may write the node directories that replace its claims.
pub const HOST_PATH_INIT: &str = "host-path-ownership";

/// What `fsGroup` does for a claim, done for the node directories that
/// replace claims on single-node: the kubelet applies `fsGroup` to no
/// hostPath, and `DirectoryOrCreate` makes a fresh directory root:root
/// 0755, which a pod running as uid 1000 (or postgres's 999) cannot write
/// (issue 19, item 12). An init container of the pod's own image, as root
/// with only CHOWN and FOWNER, gives each mounted directory's root the
/// pod's `runAsUser` as owner, the group `fsGroup`, group write and setgid,
/// as the kubelet does for a volume (plus the owner: postgres refuses a
/// data directory it does not own, and single-node keeps its data at the
/// directory's root, the seed's layout); what is below is left alone. Pods
/// without `fsGroup` get none. Only the single-node profile renders
/// hostPath — which Pod Security admits at the privileged level only, so
/// this root container costs that profile nothing — and the cluster
/// profile's pods stay free of root containers ("restricted").
fn give_host_paths_the_fs_group(pod: &mut Value, host_paths: &[String]) {
    let Some(group) = pod
        .pointer("/securityContext/fsGroup")
        .and_then(Value::as_i64)
    else {
        return;
    };
    let Some(first) = pod.pointer("/containers/0").cloned() else {
        return;
    };
    // Where the pod's containers mount each directory (the first mount).
    let mut mounts: Vec<(String, String)> = Vec::new();
    for volume in host_paths {
        let mount_path = pod
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("volumeMounts").and_then(Value::as_array))
            .flatten()
            .find(|m| {
                m.get("name").and_then(Value::as_str) == Some(volume.as_str())
                    && m.get("subPath").is_none()
            })
            .and_then(|m| m.get("mountPath").and_then(Value::as_str));
        if let Some(path) = mount_path {
            mounts.push((volume.clone(), path.to_owned()));
        }
    }
    if mounts.is_empty() {
        return;
    }
    let mut command = vec![json!("install"), json!("-d")];
    if let Some(owner) = pod
        .pointer("/securityContext/runAsUser")
        .and_then(Value::as_i64)
    {
        command.extend([json!("-o"), json!(owner.to_string())]);
    }
    command.extend([
        json!("-g"),
        json!(group.to_string()),
        json!("-m"),
        json!("2775"),
    ]);
    command.extend(mounts.iter().map(|(_, path)| json!(path)));
    let init = json!({
        "name": HOST_PATH_INIT,
        "image": first["image"],
        "command": command,
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]},
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"memory": "64Mi"},
        },
        "volumeMounts": mounts
            .iter()
            .map(|(name, path)| json!({"name": name, "mountPath": path}))
            .collect::<Vec<_>>(),
    });
    let slot = &mut pod["initContainers"];
    match slot.as_array_mut() {
        Some(list) => list.insert(0, init),
        None => *slot = json!([init]),
    }
}

/// Rewrites a reference to a generated ConfigMap or Secret; a reference to
/// neither a generated nor a catalogue object is an error (a typo would
/// otherwise leave a pod waiting forever).
fn rename_ref(
    slot: Option<&mut Value>,
    kind: &str,
    context: &Context<'_>,
    workload: &Workload<'_>,
) -> Result<(), RenderError> {
    let Some(slot) = slot else {
        return Ok(());
    };
    let Some(name) = slot.as_str() else {
        return Ok(());
    };
    let generated = match kind {
        "ConfigMap" => context.names.config_maps.get(name),
        _ => context.names.secrets.get(name),
    };
    match generated {
        Some(new) => *slot = json!(new),
        None if context
            .defined
            .contains(&(kind.to_owned(), name.to_owned())) => {}
        None => {
            return Err(RenderError::invalid(
                workload.path,
                format!(
                    "workload `{}` refers to {kind} `{name}`, which neither catalogue.yaml generates nor the catalogue defines",
                    workload.name
                ),
            ));
        }
    }
    Ok(())
}

fn pin(image: &str, context: &Context<'_>, workload: &Workload<'_>) -> Result<String, RenderError> {
    let lock_path = context.inputs.lock;
    let registry = context.environment.env.registry.as_deref();
    let relocate = |pinned: broker_pins::PinnedRef| match registry {
        Some(host) => format!("{host}/{}@{}", pinned.repository(), pinned.digest()),
        None => pinned.to_string(),
    };
    if let Some(locked) = context.lock.images.get(image) {
        let pinned = locked.pinned().map_err(|source| RenderError::LockEntry {
            path: lock_path.to_path_buf(),
            image: image.to_owned(),
            source,
        })?;
        return Ok(relocate(pinned));
    }
    if let Some(written) = context.catalogue.file.images.get(image) {
        if let Some(mirror) = context.lock.mirrors.get(written) {
            let pinned = mirror.pinned().map_err(|source| RenderError::LockEntry {
                path: lock_path.to_path_buf(),
                image: written.clone(),
                source,
            })?;
            return Ok(relocate(pinned));
        }
        context.unpinned.borrow_mut().push(UnpinnedUse {
            image: written.clone(),
            workload: workload.name.to_owned(),
            path: workload.path.clone(),
        });
        return Ok(written.clone());
    }
    Err(RenderError::UnknownImage {
        path: workload.path.clone(),
        workload: workload.name.to_owned(),
        image: image.to_owned(),
        known: context
            .lock
            .images
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    })
}
