//! The Entra ID credential, chosen in one place so that SQL Server and Blob Storage always
//! log in as the same identity: a managed identity inside Azure, developer credentials on a
//! workstation. Creating it does no network I/O; the first token request does.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;

/// Managed identity inside Azure (`IDENTITY_ENDPOINT` is set by App Service / Functions) or
/// when `client_id` names a user-assigned identity (`AZURE_CLIENT_ID`); developer credentials
/// (Azure CLI, azd) elsewhere.
pub fn credential(client_id: Option<&str>) -> azure_core::Result<Arc<dyn TokenCredential>> {
    use azure_identity::{
        DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
        UserAssignedId,
    };
    let in_azure = std::env::var_os("IDENTITY_ENDPOINT").is_some();
    if in_azure || client_id.is_some() {
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: client_id.map(|id| UserAssignedId::ClientId(id.to_string())),
            ..Default::default()
        };
        Ok(ManagedIdentityCredential::new(Some(options))?)
    } else {
        Ok(DeveloperToolsCredential::new(None)?)
    }
}
