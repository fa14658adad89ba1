//! Microsoft Entra ID credentials, for [`Identity`](crate::Identity).
//!
//! The settings of [`StorageConfig::from_env`](crate::StorageConfig::from_env)
//! cover managed identities and the developer's sign-in. A program that
//! has a credential of its own (any [`TokenCredential`] of the 0.21 Azure
//! crates, such as `azure_identity` 0.21's) passes it as
//! [`Identity::Custom`](crate::Identity::Custom); the trait and the types a
//! credential needs are re-exported here, so a program need not depend on
//! `azure_core` itself.
//!
//! ```no_run
//! use durable_status::credential::{
//!     async_trait, AccessToken, CredentialError, CustomCredential, TokenCredential, TokenSecret,
//! };
//! use durable_status::{Identity, InstanceStore, StorageConfig};
//!
//! /// A token handed out by some other part of the program.
//! #[derive(Debug)]
//! struct Handed(String);
//!
//! #[async_trait]
//! impl TokenCredential for Handed {
//!     async fn get_token(&self, _scopes: &[&str]) -> Result<AccessToken, CredentialError> {
//!         let expires = time::OffsetDateTime::now_utc() + std::time::Duration::from_secs(3600);
//!         Ok(AccessToken::new(TokenSecret::new(self.0.clone()), expires))
//!     }
//!
//!     async fn clear_cache(&self) -> Result<(), CredentialError> {
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), durable_status::Error> {
//! let identity = Identity::Custom(CustomCredential::new(Handed("eyJ...".into())));
//! let config = StorageConfig::token("myaccount", identity)?;
//! let store = InstanceStore::connect(&config, "MyTaskHub").await?;
//! # Ok(())
//! # }
//! ```
//!
//! A credential is asked for the scope `https://storage.azure.com/.default`
//! before each request; it should keep its token until shortly before it
//! expires.

pub use crate::table::identity::{
    async_trait, AccessToken, CredentialError, CredentialErrorKind, CustomCredential,
    ManagedIdentityCredential, TokenCredential, TokenSecret, AZURE_CLI_TIMEOUT,
    MANAGED_IDENTITY_TIMEOUT, REFRESH_BEFORE_EXPIRY,
};
