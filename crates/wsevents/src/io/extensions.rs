//! Which extensions a connection negotiates: the caller's [`Config`] plus
//! permessage-deflate, on by default in both roles (browsers offer it on every
//! connection), unless the caller turned it off or configured it in `Config` already.

use std::sync::Arc;

use wsevents_proto::Config;
use wsevents_proto::deflate::{DeflateConfig, NAME, PerMessageDeflate};
use wsevents_proto::extension::ExtensionFactory;

/// A caller's choice about permessage-deflate, kept apart from [`Config`] so that
/// replacing the `Config` does not drop it.
#[derive(Debug, Clone)]
pub(crate) struct DeflateChoice(Option<Arc<PerMessageDeflate>>);

impl Default for DeflateChoice {
    fn default() -> Self {
        DeflateChoice::new(Some(DeflateConfig::default()))
    }
}

impl DeflateChoice {
    pub(crate) fn new(config: Option<DeflateConfig>) -> Self {
        DeflateChoice(config.map(|c| Arc::new(PerMessageDeflate::new(c))))
    }

    /// `config` with permessage-deflate added when chosen and not already there.
    pub(crate) fn apply(&self, config: &Config) -> Config {
        let mut config = config.clone();
        if let Some(deflate) = &self.0
            && !config.extensions.iter().any(|e| e.name() == NAME)
        {
            config
                .extensions
                .push(deflate.clone() as Arc<dyn ExtensionFactory>);
        }
        config
    }
}
