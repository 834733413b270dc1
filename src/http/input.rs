//! The HTTP side of the input vocabulary ([`crate::input`], re-exported here so handlers name
//! one module): the middleware that refuses a path or query string holding a forbidden
//! character before routing ([`clean_target`]), answering FHIR routes in their own form.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

pub use crate::input::*;

/// Middleware: refuses a request whose path or query string breaks [`check_target`] before it
/// is routed, so no handler, extractor or store ever sees such a string. It depends on nothing
/// but the request line, so it tells an unauthenticated caller nothing. FHIR routes answer an
/// `OperationOutcome`, the others the error envelope.
pub async fn clean_target(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Err(e) = check_target(req.path(), req.query_string()) {
        let resp = if req.path().starts_with("/fhir/") {
            crate::http::fhir::outcome(&e)
        } else {
            actix_web::ResponseError::error_response(&e)
        };
        return Ok(req.into_response(resp).map_into_right_body());
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::tests::accepts_what_it_states;

    /// The FHIR date parameter's pattern admits only dates the FHIR search parser reads.
    #[test]
    fn every_fhir_date_the_shape_admits_is_searchable() {
        accepts_what_it_states(FhirDateParam::PATTERN, |s| {
            FhirDateParam::new(s).is_ok() && crate::http::measurements::fhir::parse_date(s).is_some()
        });
    }

    #[test]
    fn mrn_identifiers_name_the_mrn_system() {
        assert_eq!(MrnIdentifier::new("urn:coherency:default:mrn|MRN-1").unwrap().mrn(), "MRN-1");
        assert_eq!(
            "urn:coherency:default:mrn",
            crate::http::fhir::mrn_system(crate::http::patients::DEFAULT_ORG),
            "MrnIdentifier's pattern names the MRN system"
        );
    }
}
