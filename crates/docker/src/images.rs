//! The session's images: those built, committed or tagged through the proxy carry its labels (builds get
//! them in the query, commits in the body), and the sweep removes them after the session's containers,
//! as testcontainers for Java deletes the images it built. Never forced: an image a container outside
//! the sweep still uses, or that another image is built on, stays, and the sweep says why.

use std::collections::HashMap;

use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};

use super::engine::Engine;
use super::error::Error;
use super::resource::{Kind, Resource};

/// The images carrying every label of `filters` (the sweep's own label filter).
pub async fn list(
    engine: &Engine,
    filters: &HashMap<String, Vec<String>>,
) -> Result<Vec<Resource>, bollard::errors::Error> {
    let images = engine
        .docker
        .list_images(Some(
            ListImagesOptionsBuilder::default().filters(filters).build(),
        ))
        .await?;
    Ok(images
        .into_iter()
        .map(|image| Resource {
            kind: Kind::Image,
            name: image
                .repo_tags
                .iter()
                .find(|t| *t != "<none>:<none>")
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            id: image.id,
            labels: image.labels,
            created: Some(image.created),
            ..Resource::default()
        })
        .collect())
}

/// Removes one image by id, with its tags and untagged parents; not forced. Gone already is done. An
/// image with several names is removed name by name (each still naming it when it goes): by id, the
/// engine removes such an image only when forced, and forcing would take it from a stopped container
/// outside the sweep too.
pub async fn remove(engine: &Engine, id: &str) -> Result<(), Error> {
    let tags = match engine.docker.inspect_image(id).await {
        Ok(image) => image.repo_tags.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    if tags.len() > 1 {
        for tag in &tags {
            let names_it = engine
                .docker
                .inspect_image(tag)
                .await
                .is_ok_and(|i| i.id.as_deref() == Some(id));
            if names_it {
                remove_one(engine, tag).await?;
            }
        }
    }
    remove_one(engine, id).await
}

/// Removes one image reference (an id, or one of its names); not forced. Gone already is done.
async fn remove_one(engine: &Engine, id: &str) -> Result<(), Error> {
    let options = RemoveImageOptionsBuilder::default()
        .force(false)
        .noprune(false)
        .build();
    match engine.docker.remove_image(id, Some(options), None).await {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(Error::engine("")(e)),
    }
}
