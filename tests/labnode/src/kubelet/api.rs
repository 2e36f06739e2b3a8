//! Writing an object's status through the `status` subresource.
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// Sets `.status` of object `name` to `status`: a JSON merge patch on `<name>/status`, or, for a
/// server that does not take merge patches (HTTP 415), read the object and replace its status.
pub async fn write_status<K>(
    api: &Api<K>,
    name: &str,
    status: &serde_json::Value,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let patch = serde_json::json!({ "status": status });
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if super::error::is_status(&e, 415) => {
            let current = api.get_status(name).await?;
            let mut value = serde_json::to_value(&current).map_err(kube::Error::SerdeError)?;
            value["status"] = status.clone();
            let updated: K = serde_json::from_value(value).map_err(kube::Error::SerdeError)?;
            api.replace_status(name, &PostParams::default(), &updated)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}
