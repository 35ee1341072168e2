//! The codec of every generated client and server: prost's, with two differences for the
//! requests a server receives. A body that does not decode is the caller's mistake,
//! INVALID_ARGUMENT with the reason `MALFORMED_REQUEST` (tonic's codec says INTERNAL, which
//! here is kept for bugs); and every string of the request passes [`crate::text`]'s check,
//! or the call is INVALID_ARGUMENT with a `BadRequest` violation naming each field, before
//! any handler runs.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::text::{Inbound, Violation};

/// The `domain` of the `ErrorInfo` the codec's refusals carry.
const DOMAIN: &str = "tollgate.v1";

/// [`tonic_prost::ProstCodec`] with the checks above.
#[derive(Debug, Clone)]
pub struct CheckingCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CheckingCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for CheckingCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Inbound + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = CheckingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckingDecoder(PhantomData)
    }
}

/// Decodes `U`, checking it when it is a request.
#[derive(Debug, Clone)]
pub struct CheckingDecoder<U>(PhantomData<U>);

impl<U: Message + Default + Inbound> Decoder for CheckingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let message = match U::decode(buf) {
            Ok(message) => message,
            // A response that does not decode is the server's fault: INTERNAL, as gRPC says.
            Err(e) if !U::CHECKED => return Err(Status::internal(e.to_string())),
            Err(_) => {
                return Err(Status::with_error_details(
                    Code::InvalidArgument,
                    "the request body is not a valid protobuf message of this RPC",
                    ErrorDetails::with_error_info(
                        crate::v1::ErrorReason::MalformedRequest.as_str_name(),
                        DOMAIN,
                        [],
                    ),
                ));
            }
        };
        if U::CHECKED {
            let mut violations = Vec::new();
            message.check_text(None, &mut violations);
            if !violations.is_empty() {
                return Err(refused(&violations));
            }
        }
        Ok(Some(message))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

fn refused(violations: &[Violation]) -> Status {
    let mut details = ErrorDetails::with_error_info(
        crate::v1::ErrorReason::InvalidArgument.as_str_name(),
        DOMAIN,
        [],
    );
    for (field, description) in violations {
        details.add_bad_request_violation(field.clone(), *description);
    }
    let fields: Vec<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid {}", fields.join(", ")),
        details,
    )
}
