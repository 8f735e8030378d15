//! From catalogue, environment, credentials and lock to the final objects:
//! a chain of small transforms, each over the whole object list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use broker_pins::Lock;
use serde_json::{Map, Value, json};

use crate::catalogue::{Catalogue, SourceObject, read_generator_files};
use crate::environment::{LoadedEnvironment, Profile};
use crate::error::RenderError;
use crate::hash;
use crate::secrets;
use crate::{Inputs, Object, Rendered};

/// The label every object carries with its own (base) name.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label tying every object to the broker.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// The label saying this tool made the object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

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

pub(crate) fn render(inputs: &Inputs<'_>) -> Result<Rendered, RenderError> {
    let environment = LoadedEnvironment::read(inputs.environment)?;
    let catalogue = Catalogue::read(inputs.manifests)?;
    let lock = Lock::read(inputs.lock)?.ok_or_else(|| RenderError::NoLock {
        path: inputs.lock.to_path_buf(),
    })?;
    let namespace = environment.env.namespace.clone();
    let mut warnings = Vec::new();
    let mut objects: Vec<(SourceObject, String)> = Vec::new();

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

    // Generators first: every reference below is rewritten to their names.
    let mut names = Names::default();
    for generator in &catalogue.file.config_maps {
        let mut entries = read_generator_files(&catalogue.path, generator, inputs.source)?;
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
        if !entries.data.is_empty() {
            object["data"] = json!(entries.data);
        }
        if !entries.binary_data.is_empty() {
            object["binaryData"] = json!(entries.binary_data);
        }
        names.config_maps.insert(generator.name.clone(), name);
        objects.push((
            SourceObject {
                path: catalogue.path.clone(),
                value: object,
            },
            generator.name.clone(),
        ));
    }
    let needs_env_file = catalogue
        .file
        .secrets
        .iter()
        .any(|s| !environment.env.existing_secrets.contains_key(&s.name));
    let credentials = match (inputs.env_file, needs_env_file) {
        (Some(path), true) => {
            let credentials = secrets::read_env_file(path, &credential_keys)?;
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
            credentials
        }
        (None, true) => {
            return Err(RenderError::invalid(
                &environment.path,
                "the credentials Secret is generated from --env-file (see environments/env.sample); pass one, or name an existing Secret in `existingSecrets`",
            ));
        }
        (_, false) => BTreeMap::new(),
    };
    for (generator, existing) in &environment.env.existing_secrets {
        if !catalogue.file.secrets.iter().any(|s| &s.name == generator) {
            return Err(RenderError::invalid(
                &environment.path,
                format!(
                    "existingSecrets.{generator}: the catalogue generates no Secret of that name"
                ),
            ));
        }
        names.secrets.insert(generator.clone(), existing.clone());
    }
    for generator in &catalogue.file.secrets {
        if names.secrets.contains_key(&generator.name) {
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
        objects.push((
            SourceObject {
                path: catalogue.path.clone(),
                value: object,
            },
            generator.name.clone(),
        ));
    }

    let claims: BTreeSet<String> = catalogue
        .objects
        .iter()
        .filter(|o| o.kind() == "PersistentVolumeClaim")
        .map(|o| o.name().to_owned())
        .collect();
    let missing: Vec<&str> = claims
        .iter()
        .filter(|c| !environment.env.storage.contains_key(*c))
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
    if let Some(extra) = environment
        .env
        .storage
        .keys()
        .find(|k| !claims.contains(*k))
    {
        return Err(RenderError::invalid(
            &environment.path,
            format!("storage.{extra}: the catalogue has no PersistentVolumeClaim of that name"),
        ));
    }
    let services: BTreeSet<&str> = catalogue
        .objects
        .iter()
        .filter(|o| o.kind() == "Service")
        .map(SourceObject::name)
        .collect();
    if let Some(extra) = environment
        .env
        .expose
        .keys()
        .find(|k| !services.contains(k.as_str()))
    {
        return Err(RenderError::invalid(
            &environment.path,
            format!("expose.{extra}: the catalogue has no Service of that name"),
        ));
    }
    let defined: BTreeSet<(String, String)> = catalogue
        .objects
        .iter()
        .map(|o| (o.kind().to_owned(), o.name().to_owned()))
        .collect();

    let mut namespaces = 0;
    for source in &catalogue.objects {
        let mut object = source.clone();
        let base = source.name().to_owned();
        match source.kind() {
            "Namespace" => {
                namespaces += 1;
                object.value["metadata"]["name"] = json!(namespace);
            }
            "PersistentVolumeClaim" => {
                if environment.env.profile == Profile::SingleNode {
                    // Its pods mount the node directory instead.
                    continue;
                }
                claim_for_cluster(&mut object.value, &environment.env.storage[&base]);
            }
            "Service" => {
                if let Some(exposure) = environment.env.expose.get(&base) {
                    expose(
                        &mut object,
                        exposure,
                        environment.env.profile,
                        &environment.path,
                    )?;
                }
            }
            kind if WORKLOADS.contains(&kind) => {
                let context = PodContext {
                    object_path: &source.path,
                    workload: &base,
                    lock: &lock,
                    lock_path: inputs.lock,
                    catalogue: &catalogue,
                    environment: &environment,
                    names: &names,
                    defined: &defined,
                    require_pinned: inputs.require_pinned,
                };
                let template = &mut object.value["spec"]["template"];
                add_common_labels(template, &base);
                let pod = template
                    .get_mut("spec")
                    .filter(|s| s.is_object())
                    .ok_or_else(|| {
                        RenderError::invalid(
                            &source.path,
                            format!("{kind} `{base}` has no spec.template.spec"),
                        )
                    })?;
                rewrite_pod(pod, &context, &mut warnings)?;
            }
            _ => {}
        }
        objects.push((object, base));
    }
    if namespaces != 1 {
        return Err(RenderError::invalid(
            inputs.manifests,
            format!("the catalogue must hold exactly one Namespace, it holds {namespaces}"),
        ));
    }

    let mut rendered = Vec::new();
    for (mut object, base) in objects {
        let kind = object.kind().to_owned();
        if !CLUSTER_SCOPED.contains(&kind.as_str()) {
            object.value["metadata"]["namespace"] = json!(namespace);
        }
        let label_name = if kind == "Namespace" {
            namespace.clone()
        } else {
            base.clone()
        };
        add_common_labels(&mut object.value, &label_name);
        rendered.push(Object {
            name: object.name().to_owned(),
            file_name: format!("{}-{base}.yaml", kind.to_ascii_lowercase()),
            secret: kind == "Secret",
            yaml: crate::yaml::to_yaml(&object.value),
            kind,
            value: object.value,
        });
    }
    rendered.sort_by(|a, b| {
        (kind_rank(&a.kind), &a.kind, &a.name).cmp(&(kind_rank(&b.kind), &b.kind, &b.name))
    });
    Ok(Rendered {
        objects: rendered,
        warnings,
    })
}

/// The order `kubectl apply` needs: namespace, then config, storage,
/// Services, workloads.
fn kind_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "ConfigMap" | "Secret" => 1,
        "PersistentVolumeClaim" => 2,
        "Service" => 3,
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => 5,
        _ => 4,
    }
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
        labels.insert(PART_OF_LABEL.to_owned(), json!("broker"));
        labels.insert(MANAGED_BY_LABEL.to_owned(), json!("broker-images"));
    }
}

fn ensure_object<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    if !value[key].is_object() {
        value[key] = Value::Object(Map::new());
    }
    &mut value[key]
}

fn claim_for_cluster(claim: &mut Value, storage: &crate::environment::Storage) {
    let spec = ensure_object(claim, "spec");
    spec["accessModes"] = json!(
        storage
            .access_modes
            .clone()
            .unwrap_or_else(|| vec!["ReadWriteOnce".to_owned()])
    );
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
    if let Some(ports) = spec["ports"].as_array_mut() {
        for port in ports {
            let port_name = port["name"].as_str().unwrap_or_default().to_owned();
            if let Some(number) = exposure.node_ports.get(&port_name) {
                port["nodePort"] = json!(number.value);
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

struct PodContext<'a> {
    object_path: &'a PathBuf,
    workload: &'a str,
    lock: &'a Lock,
    lock_path: &'a Path,
    catalogue: &'a Catalogue,
    environment: &'a LoadedEnvironment,
    names: &'a Names,
    defined: &'a BTreeSet<(String, String)>,
    require_pinned: bool,
}

fn rewrite_pod(
    pod: &mut Value,
    context: &PodContext<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), RenderError> {
    for list in ["initContainers", "containers"] {
        let Some(containers) = pod.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers {
            let image = container["image"].as_str().unwrap_or_default().to_owned();
            container["image"] = json!(pin(&image, context, warnings)?);
            if let Some(sources) = container.get_mut("envFrom").and_then(Value::as_array_mut) {
                for source in sources {
                    rename_ref(
                        source.pointer_mut("/configMapRef/name"),
                        "ConfigMap",
                        context,
                    )?;
                    rename_ref(source.pointer_mut("/secretRef/name"), "Secret", context)?;
                }
            }
            if let Some(vars) = container.get_mut("env").and_then(Value::as_array_mut) {
                for var in vars {
                    rename_ref(
                        var.pointer_mut("/valueFrom/configMapKeyRef/name"),
                        "ConfigMap",
                        context,
                    )?;
                    rename_ref(
                        var.pointer_mut("/valueFrom/secretKeyRef/name"),
                        "Secret",
                        context,
                    )?;
                }
            }
        }
    }
    if let Some(volumes) = pod.get_mut("volumes").and_then(Value::as_array_mut) {
        for volume in volumes {
            rename_ref(volume.pointer_mut("/configMap/name"), "ConfigMap", context)?;
            rename_ref(volume.pointer_mut("/secret/secretName"), "Secret", context)?;
            if let Some(sources) = volume
                .pointer_mut("/projected/sources")
                .and_then(Value::as_array_mut)
            {
                for source in sources {
                    rename_ref(source.pointer_mut("/configMap/name"), "ConfigMap", context)?;
                    rename_ref(source.pointer_mut("/secret/name"), "Secret", context)?;
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
                            context.object_path,
                            format!(
                                "workload `{}` mounts claim `{claim}`, which the catalogue does not define",
                                context.workload
                            ),
                        )
                    })?;
                if let Value::Object(map) = volume {
                    map.remove("persistentVolumeClaim");
                    map.insert(
                        "hostPath".to_owned(),
                        json!({"path": host_path, "type": "DirectoryOrCreate"}),
                    );
                }
            }
        }
    }
    if let Some(secret) = &context.environment.env.pull_secret {
        pod["imagePullSecrets"] = json!([{ "name": secret }]);
    }
    Ok(())
}

/// Rewrites a reference to a generated ConfigMap or Secret; a reference to
/// neither a generated nor a catalogue object is an error (a typo would
/// otherwise leave a pod waiting forever).
fn rename_ref(
    slot: Option<&mut Value>,
    kind: &str,
    context: &PodContext<'_>,
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
                context.object_path,
                format!(
                    "workload `{}` refers to {kind} `{name}`, which neither catalogue.yaml generates nor the catalogue defines",
                    context.workload
                ),
            ));
        }
    }
    Ok(())
}

fn pin(
    image: &str,
    context: &PodContext<'_>,
    warnings: &mut Vec<String>,
) -> Result<String, RenderError> {
    let registry = context.environment.env.registry.as_deref();
    let relocate = |pinned: broker_pins::PinnedRef| match registry {
        Some(host) => format!("{host}/{}@{}", pinned.repository(), pinned.digest()),
        None => pinned.to_string(),
    };
    if let Some(locked) = context.lock.images.get(image) {
        let pinned = locked.pinned().map_err(|source| RenderError::LockEntry {
            path: context.lock_path.to_path_buf(),
            image: image.to_owned(),
            source,
        })?;
        return Ok(relocate(pinned));
    }
    if let Some(written) = context.catalogue.file.images.get(image) {
        if let Some(mirror) = context.lock.mirrors.get(written) {
            let pinned = mirror.pinned().map_err(|source| RenderError::LockEntry {
                path: context.lock_path.to_path_buf(),
                image: written.clone(),
                source,
            })?;
            return Ok(relocate(pinned));
        }
        if context.require_pinned {
            return Err(RenderError::Unpinned {
                path: context.object_path.clone(),
                workload: context.workload.to_owned(),
                image: written.clone(),
            });
        }
        warnings.push(format!(
            "workload `{}`: `{written}` is not mirrored in {}, left unpinned (run `broker-images mirror {written}`)",
            context.workload,
            context.lock_path.display()
        ));
        return Ok(written.clone());
    }
    Err(RenderError::UnknownImage {
        path: context.object_path.clone(),
        workload: context.workload.to_owned(),
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
