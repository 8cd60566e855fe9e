//! What the operator must fix when a request to the S3 server fails, read from the error
//! `object_store` returns (its messages alone say "error sending request").

use std::error::Error;
use std::io::ErrorKind;

use super::S3Location;

/// A failure the operator can fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// The server has no such bucket.
    MissingBucket,
    /// The server refused the credentials (HTTP 401 or 403).
    RefusedCredentials,
    /// Nothing listens at the endpoint.
    ConnectionRefused,
    /// The endpoint's host name does not resolve.
    UnknownHost,
    /// The server did not answer in time.
    TimedOut,
}

impl Cause {
    /// The cause of `e`, when it is one of these.
    pub(super) fn of(e: &object_store::Error) -> Option<Self> {
        if matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) {
            return Some(Self::RefusedCredentials);
        }
        let mut source: Option<&(dyn Error + 'static)> = Some(e);
        while let Some(error) = source {
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    ErrorKind::ConnectionRefused => return Some(Self::ConnectionRefused),
                    ErrorKind::TimedOut => return Some(Self::TimedOut),
                    _ => {}
                }
            }
            source = error.source();
        }
        // The S3 error codes and the HTTP client's error kinds only show in the details.
        let details = format!("{e:?}");
        let shows = |markers: &[&str]| markers.iter().any(|m| details.contains(m));
        if shows(&["NoSuchBucket"]) {
            Some(Self::MissingBucket)
        } else if shows(&[
            "status: 401",
            "status: 403",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ]) {
            Some(Self::RefusedCredentials)
        } else if shows(&["ConnectionRefused"]) {
            Some(Self::ConnectionRefused)
        } else if shows(&["dns error"]) {
            Some(Self::UnknownHost)
        } else if shows(&["TimedOut", "timed out", "Timeout"]) {
            Some(Self::TimedOut)
        } else {
            None
        }
    }

    /// What to fix, in a sentence, for the store at `location` using the credentials
    /// from `credentials` (their origin, never a secret).
    pub(super) fn advice(self, location: &S3Location, credentials: &str) -> String {
        let endpoint = location.endpoint.as_deref().unwrap_or("AWS S3");
        let bucket = &location.bucket;
        match self {
            Self::MissingBucket => format!(
                "the bucket {bucket:?} does not exist at {endpoint}: create it, or correct \
                 the bucket name in the datastore URI"
            ),
            Self::RefusedCredentials => format!(
                "{endpoint} refused the credentials ({credentials}): check the access key \
                 and its secret, and that the key may list, read and write the bucket \
                 {bucket:?}"
            ),
            Self::ConnectionRefused => format!(
                "nothing accepts connections at {endpoint}: check the endpoint's host and \
                 port, and that the server is running"
            ),
            Self::UnknownHost => format!(
                "the host name of {endpoint} does not resolve: correct the endpoint in the \
                 datastore URI"
            ),
            Self::TimedOut => format!(
                "{endpoint} did not answer in time: check that the endpoint is the S3 \
                 server's, that no firewall drops the connection, and the server's load"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_are_named_by_their_origin_only() {
        let refused = object_store::Error::PermissionDenied {
            path: "x".into(),
            source: "403 Forbidden: InvalidAccessKeyId".into(),
        };
        let cause = Cause::of(&refused);
        assert_eq!(cause, Some(Cause::RefusedCredentials));
        let location = S3Location::parse("s3://media?endpoint=http://s3.example:3900").unwrap();
        let advice = cause.unwrap().advice(
            &location,
            "the access key GK31 of the AWS profile \"media\"",
        );
        assert!(
            advice.starts_with(
                "http://s3.example:3900 refused the credentials (the access key GK31 of the AWS \
                 profile \"media\"): check the access key and its secret"
            ),
            "{advice}"
        );
        let other = object_store::Error::NotImplemented {
            operation: "x".into(),
            implementer: "y".into(),
        };
        assert_eq!(Cause::of(&other), None);
    }
}
