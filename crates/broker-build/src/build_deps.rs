//! Finding the deps image of one build by its key: the store, else the
//! caller's deps source, else the Docker engine.

use broker_oci::StoredImage;

use crate::build_error::BuildError;
use crate::build_run::{DepsWanted, Run};
use crate::deps::{self, BuildOutput, DepsInputs, DepsKey};
use crate::spec::ImageSpec;

/// How the deps image of one build was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DepsOrigin {
    /// Already in the local store.
    Store,
    /// Pulled from the registry.
    Registry,
    /// Built by the Docker engine.
    Engine,
}

/// The deps image: from the store, else the deps source, else the engine.
pub(crate) async fn deps_image(
    run: &Run,
    spec: &ImageSpec,
    inputs: &DepsInputs,
    key: &DepsKey,
) -> Result<(StoredImage, DepsOrigin), BuildError> {
    let name = spec.name.as_str();
    let store_tag = format!("{name}:{}", key.tag());
    let store_err = |source| BuildError::Store {
        image: name.to_owned(),
        source,
    };
    if run.store.resolve(&store_tag).is_ok() {
        run.reporter
            .stage(name, &format!("deps {} from the store", key.tag()));
        let image = run.store.image(&store_tag).map_err(store_err)?;
        return Ok((image, DepsOrigin::Store));
    }
    if let Some(source) = &run.deps_source {
        let tag = key.tag();
        let wanted = DepsWanted {
            name,
            tag: &tag,
            store_tag: &store_tag,
        };
        let found =
            source
                .fetch(&run.store, wanted)
                .await
                .map_err(|source| BuildError::DepsSource {
                    image: name.to_owned(),
                    source,
                })?;
        if let Some(origin) = found {
            run.reporter
                .stage(name, &format!("deps {} from {origin}", key.tag()));
            let image = run.store.image(&store_tag).map_err(store_err)?;
            return Ok((image, DepsOrigin::Registry));
        }
    }
    if run.options.verify {
        return Err(BuildError::NoDeps {
            image: name.to_owned(),
            tag: key.tag(),
        });
    }
    run.reporter.stage(
        name,
        &format!(
            "deps {}: building with the Docker engine (base {})",
            key.tag(),
            inputs.base
        ),
    );
    let docker = run.engine.get_or_try_init(|| deps::connect(name)).await?;
    let engine_tag = format!("broker-images/{name}:{}", key.tag());
    let output: &dyn BuildOutput = &*run.reporter;
    let image = deps::build_with_engine(
        docker,
        inputs,
        &engine_tag,
        &run.store,
        &store_tag,
        &run.engine_options,
        output,
    )
    .await?;
    Ok((image, DepsOrigin::Engine))
}
