//! The catalog: public model names → the deployments that can serve them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, LOCAL_PROVIDER, ModelType};
use crate::error::{Error, Result};
use crate::providers::Provider;

/// One way to serve a model: a provider and the name it knows the model by.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub provider: Provider,
    pub upstream_model: String,
}

#[derive(Debug)]
pub struct ModelEntry {
    pub public_name: String,
    pub kind: ModelType,
    pub context_length: Option<u32>,
    pub deployments: Vec<Deployment>,
    pub created: u64,
}

#[derive(Debug, Default)]
pub struct Catalog {
    models: HashMap<String, Arc<ModelEntry>>,
    order: Vec<String>,
}

impl Catalog {
    /// Builds the catalog from config. Local models are added by whoever owns the engine.
    pub fn from_config(config: &Config) -> Result<Catalog> {
        let mut providers = HashMap::new();
        for (name, pc) in &config.providers {
            providers.insert(name.clone(), Provider::from_config(name, pc)?);
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut catalog = Catalog::default();
        for (public, mc) in &config.models {
            let provider_name = mc.provider.get_ref();
            if provider_name == LOCAL_PROVIDER {
                continue;
            }
            let Some(provider) = providers.get(provider_name) else {
                return Err(Error::internal(format!(
                    "model {public}: provider {provider_name} is not defined"
                )));
            };
            catalog.insert(ModelEntry {
                public_name: public.clone(),
                kind: mc.kind.unwrap_or_default(),
                context_length: mc.context_length,
                deployments: vec![Deployment {
                    provider: provider.clone(),
                    upstream_model: mc.model.clone().unwrap_or_else(|| public.clone()),
                }],
                created,
            });
        }
        Ok(catalog)
    }

    pub fn insert(&mut self, entry: ModelEntry) {
        if !self.models.contains_key(&entry.public_name) {
            self.order.push(entry.public_name.clone());
        }
        self.models.insert(entry.public_name.clone(), Arc::new(entry));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ModelEntry>> {
        self.models.get(name)
    }

    /// Resolves a model name or fails with `model_not_found`.
    pub fn resolve(&self, name: &str) -> Result<&Arc<ModelEntry>> {
        self.models.get(name).ok_or_else(|| Error::model_not_found(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<ModelEntry>> {
        self.order.iter().filter_map(|n| self.models.get(n))
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}
