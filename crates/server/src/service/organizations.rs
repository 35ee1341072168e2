//! `tollgate.v1.OrganizationService`.

use storage::repo::AuditOf;
use tollgate_proto::v1;
use tollgate_proto::v1::organization_service_server::OrganizationService;
use tonic::{Request, Response, Status};

use super::{kind_to_proto, org_to_proto, parse_id, role_from_proto, role_to_proto, timestamp};
use crate::App;
use crate::auth::caller;
use crate::error::{ApiError, ApiResult};
use crate::telemetry::rpc;

/// The service.
#[derive(Debug, Clone)]
pub struct Organizations {
    pub(super) app: App,
}

impl Organizations {
    /// Over the shared state.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl OrganizationService for Organizations {
    async fn create_organization(
        &self,
        request: Request<v1::CreateOrganizationRequest>,
    ) -> Result<Response<v1::CreateOrganizationResponse>, Status> {
        rpc(&self.app, self.create(request)).await
    }

    async fn get_organization(
        &self,
        request: Request<v1::GetOrganizationRequest>,
    ) -> Result<Response<v1::GetOrganizationResponse>, Status> {
        rpc(&self.app, self.get(request)).await
    }

    async fn add_member(
        &self,
        request: Request<v1::AddMemberRequest>,
    ) -> Result<Response<v1::AddMemberResponse>, Status> {
        rpc(&self.app, self.add_member_inner(request)).await
    }

    async fn list_members(
        &self,
        request: Request<v1::ListMembersRequest>,
    ) -> Result<Response<v1::ListMembersResponse>, Status> {
        rpc(&self.app, self.list(request)).await
    }

    async fn update_mfa_policy(
        &self,
        request: Request<v1::UpdateMfaPolicyRequest>,
    ) -> Result<Response<v1::UpdateMfaPolicyResponse>, Status> {
        rpc(&self.app, self.update_policy(request)).await
    }

    async fn reset_member_mfa(
        &self,
        request: Request<v1::ResetMemberMfaRequest>,
    ) -> Result<Response<v1::ResetMemberMfaResponse>, Status> {
        rpc(&self.app, self.reset_member(request)).await
    }

    async fn list_audit_events(
        &self,
        request: Request<v1::ListAuditEventsRequest>,
    ) -> Result<Response<v1::ListAuditEventsResponse>, Status> {
        rpc(&self.app, self.audit_events(request)).await
    }
}

/// An opaque page token: the organization and the position after which the next page starts,
/// base64url. Bound to the organization, so a token of one list cannot page through another.
pub(super) fn encode_page_token(org: storage::Uuid, after: &[u8]) -> String {
    use base64::Engine as _;
    let mut bytes = Vec::with_capacity(16 + after.len());
    bytes.extend_from_slice(org.as_bytes());
    bytes.extend_from_slice(after);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The position of a page token of `org`'s list.
pub(super) fn decode_page_token(org: storage::Uuid, token: &str) -> ApiResult<Vec<u8>> {
    use base64::Engine as _;
    let bad = || ApiError::field("page_token", "is not a page token of this list");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let (token_org, after) = bytes.split_at_checked(16).ok_or_else(bad)?;
    let token_org = storage::Uuid::from_slice(token_org).map_err(|_| bad())?;
    if token_org == org {
        Ok(after.to_vec())
    } else {
        Err(bad())
    }
}

/// Keeps a value, or gathers its field violations so all of them are reported at once.
pub(super) fn collect<T>(
    violations: &mut Vec<(String, String)>,
    result: ApiResult<T>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(ApiError::InvalidArgument(mut v)) => {
            violations.append(&mut v);
            None
        }
        Err(_) => None,
    }
}

impl Organizations {
    async fn create(
        &self,
        request: Request<v1::CreateOrganizationRequest>,
    ) -> ApiResult<v1::CreateOrganizationResponse> {
        caller(&request)?.require("organizations:write")?;
        let body = request.into_inner();
        let mut violations = Vec::new();
        let name = body.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            violations.push(("name".to_owned(), "must be 1 to 200 characters".to_owned()));
        }
        let owner = collect(
            &mut violations,
            parse_id("owner_user_id", &body.owner_user_id),
        );
        let (Some(owner), true) = (owner, violations.is_empty()) else {
            return Err(ApiError::InvalidArgument(violations));
        };
        let now = self.app.now();
        // The organization, its owner's membership and the event are one transaction.
        let org = self
            .app
            .storage
            .organizations()
            .create_with_owner(name, owner, now, AuditOf::by_caller("organization.created"))
            .await?;
        Ok(v1::CreateOrganizationResponse {
            organization: Some(org_to_proto(&org)),
        })
    }

    async fn get(
        &self,
        request: Request<v1::GetOrganizationRequest>,
    ) -> ApiResult<v1::GetOrganizationResponse> {
        caller(&request)?.require("organizations:read")?;
        let id = parse_id("organization_id", &request.into_inner().organization_id)?;
        let org = self
            .app
            .storage
            .organizations()
            .get(id)
            .await?
            .ok_or(ApiError::NotFound("organization"))?;
        Ok(v1::GetOrganizationResponse {
            organization: Some(org_to_proto(&org)),
        })
    }

    async fn add_member_inner(
        &self,
        request: Request<v1::AddMemberRequest>,
    ) -> ApiResult<v1::AddMemberResponse> {
        caller(&request)?.require("organizations:write")?;
        let body = request.into_inner();
        let mut violations = Vec::new();
        let org = collect(
            &mut violations,
            parse_id("organization_id", &body.organization_id),
        );
        let user = collect(&mut violations, parse_id("user_id", &body.user_id));
        let role = collect(&mut violations, role_from_proto("role", body.role));
        let (Some(org), Some(user), Some(role)) = (org, user, role) else {
            return Err(ApiError::InvalidArgument(violations));
        };
        let now = self.app.now();
        // The membership and its event (the role granted) are one transaction.
        let membership = self
            .app
            .storage
            .memberships()
            .add(org, user, role, now, AuditOf::by_caller("member.added"))
            .await?;
        Ok(v1::AddMemberResponse {
            member: Some(self.member(&membership).await?),
        })
    }

    async fn list(
        &self,
        request: Request<v1::ListMembersRequest>,
    ) -> ApiResult<v1::ListMembersResponse> {
        caller(&request)?.require("organizations:read")?;
        let body = request.into_inner();
        let org = parse_id("organization_id", &body.organization_id)?;
        let page_size = match body.page_size {
            0 => 50,
            n @ 1..=500 => u64::try_from(n).unwrap_or(50),
            _ => return Err(ApiError::field("page_size", "must be 0 to 500")),
        };
        let after =
            if body.page_token.is_empty() {
                None
            } else {
                let after = decode_page_token(org, &body.page_token)?;
                Some(storage::Uuid::from_slice(&after).map_err(|_| {
                    ApiError::field("page_token", "is not a page token of this list")
                })?)
            };
        self.app
            .storage
            .organizations()
            .get(org)
            .await?
            .ok_or(ApiError::NotFound("organization"))?;
        let page = self
            .app
            .storage
            .memberships()
            .list(org, after, page_size)
            .await?;
        let mut members = Vec::with_capacity(page.items.len());
        for membership in &page.items {
            members.push(self.member(membership).await?);
        }
        Ok(v1::ListMembersResponse {
            members,
            next_page_token: page
                .next
                .map(|id| encode_page_token(org, id.as_bytes()))
                .unwrap_or_default(),
        })
    }

    async fn member(
        &self,
        membership: &storage::entity::membership::Model,
    ) -> ApiResult<v1::Member> {
        let user = self
            .app
            .storage
            .users()
            .get(membership.user_id)
            .await?
            .ok_or(ApiError::NotFound("user"))?;
        let factors = self.app.storage.factors().of_user(user.id, true).await?;
        let mut methods: Vec<i32> = factors
            .iter()
            .map(|f| kind_to_proto(f.kind) as i32)
            .collect();
        methods.sort_unstable();
        methods.dedup();
        Ok(v1::Member {
            user_id: user.id.to_string(),
            email: user.email,
            role: role_to_proto(membership.role) as i32,
            mfa_enrolled: !factors.is_empty(),
            mfa_methods: methods,
            mfa_last_used_time: factors
                .iter()
                .filter_map(|f| f.last_used_at)
                .max()
                .map(timestamp),
            join_time: Some(timestamp(membership.created_at)),
        })
    }
}
