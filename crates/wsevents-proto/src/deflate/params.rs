//! The four parameters of permessage-deflate (RFC 7692 §7.1) and the negotiation rules
//! between them: which offers a server may accept and what it must answer, which
//! answers a client must refuse.
//!
//! Pure functions over [`ExtensionOffer`]s: no compressor here (`codec.rs`), no
//! configuration defaults (`mod.rs`).

use std::fmt;

use crate::handshake::{ExtensionOffer, ExtensionParam};

/// The registered name of the extension.
pub const NAME: &str = "permessage-deflate";

/// The smallest LZ77 window a peer may ask for: 2^8 bytes.
pub const MIN_WINDOW_BITS: u8 = 8;
/// The largest LZ77 window, and the default: 2^15 bytes.
pub const MAX_WINDOW_BITS: u8 = 15;

/// How `client_max_window_bits` appears in an offer or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientWindow {
    /// Absent.
    #[default]
    Absent,
    /// Present without a value: in an offer, "you may limit my window" (a value is
    /// invalid in this form in an answer).
    Any,
    /// Present with a value (8–15).
    Bits(u8),
}

/// The parameters of one permessage-deflate offer or answer, checked against the
/// grammar of RFC 7692 §7.1: each at most once, the `*_no_context_takeover` ones
/// without a value, window bits a decimal 8–15 without leading zeros.
///
/// ```
/// use wsevents_proto::deflate::{ClientWindow, DeflateParams};
/// use wsevents_proto::handshake::parse_extensions;
///
/// let offers = parse_extensions("permessage-deflate; client_max_window_bits; server_max_window_bits=10").unwrap();
/// let params = DeflateParams::parse(&offers[0]).unwrap();
/// assert_eq!(params.client_max_window_bits, ClientWindow::Any);
/// assert_eq!(params.server_max_window_bits, Some(10));
/// assert_eq!(params.to_offer().to_string(), "permessage-deflate; server_max_window_bits=10; client_max_window_bits");
///
/// let twice = parse_extensions("permessage-deflate; server_no_context_takeover; server_no_context_takeover").unwrap();
/// assert!(DeflateParams::parse(&twice[0]).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeflateParams {
    /// The server resets its compression context after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compression context after each message.
    pub client_no_context_takeover: bool,
    /// The largest window the server compresses with.
    pub server_max_window_bits: Option<u8>,
    /// The largest window the client compresses with.
    pub client_max_window_bits: ClientWindow,
}

/// Why a permessage-deflate parameter list is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// A parameter this extension does not define.
    #[error("unknown permessage-deflate parameter {0:?}")]
    Unknown(String),
    /// A parameter given twice.
    #[error("duplicate permessage-deflate parameter {0:?}")]
    Duplicate(String),
    /// A parameter with a value it may not have, or without one it needs.
    #[error("invalid value for permessage-deflate parameter {name:?}: {value:?}")]
    InvalidValue {
        /// The parameter.
        name: String,
        /// Its value, if any.
        value: Option<String>,
    },
    /// A client's check of the server's answer failed.
    #[error("unacceptable permessage-deflate answer: {0}")]
    Unacceptable(&'static str),
}

impl DeflateParams {
    /// Read and check the parameters of an offer or answer named `permessage-deflate`.
    pub fn parse(offer: &ExtensionOffer) -> Result<Self, ParamError> {
        let mut params = DeflateParams::default();
        let mut seen = [false; 4];
        for ExtensionParam { name, value } in &offer.params {
            let index = match name.as_str() {
                "server_no_context_takeover" => 0,
                "client_no_context_takeover" => 1,
                "server_max_window_bits" => 2,
                "client_max_window_bits" => 3,
                _ => return Err(ParamError::Unknown(name.clone())),
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(ParamError::Duplicate(name.clone()));
            }
            let invalid = || ParamError::InvalidValue {
                name: name.clone(),
                value: value.clone(),
            };
            match (index, value.as_deref()) {
                (0, None) => params.server_no_context_takeover = true,
                (1, None) => params.client_no_context_takeover = true,
                (2, Some(bits)) => {
                    params.server_max_window_bits = Some(window_bits(bits).ok_or_else(invalid)?)
                }
                (3, None) => params.client_max_window_bits = ClientWindow::Any,
                (3, Some(bits)) => {
                    params.client_max_window_bits =
                        ClientWindow::Bits(window_bits(bits).ok_or_else(invalid)?)
                }
                _ => return Err(invalid()),
            }
        }
        Ok(params)
    }

    /// These parameters as an offer or answer for the handshake header.
    pub fn to_offer(&self) -> ExtensionOffer {
        let mut offer = ExtensionOffer::new(NAME);
        if self.server_no_context_takeover {
            offer = offer.param("server_no_context_takeover", None);
        }
        if self.client_no_context_takeover {
            offer = offer.param("client_no_context_takeover", None);
        }
        if let Some(bits) = self.server_max_window_bits {
            offer = offer.param("server_max_window_bits", Some(bits.to_string()));
        }
        match self.client_max_window_bits {
            ClientWindow::Absent => {}
            ClientWindow::Any => offer = offer.param("client_max_window_bits", None),
            ClientWindow::Bits(bits) => {
                offer = offer.param("client_max_window_bits", Some(bits.to_string()))
            }
        }
        offer
    }
}

impl fmt::Display for DeflateParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_offer().fmt(f)
    }
}

/// `1*DIGIT` in 8..=15, without leading zeros (RFC 7692 §7.1.2.1).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value
        .parse::<u8>()
        .ok()
        .filter(|bits| (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(bits))
}

/// What a server wants of the connections it accepts (a subset of
/// [`DeflateConfig`](super::DeflateConfig)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerPolicy {
    pub(crate) server_no_context_takeover: bool,
    pub(crate) client_no_context_takeover: bool,
    pub(crate) server_max_window_bits: u8,
    pub(crate) client_max_window_bits: u8,
}

/// The window sizes and context rules both ends keep on an open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreement {
    /// The window this end compresses with.
    pub(crate) local_window_bits: u8,
    /// This end resets its compressor after each message.
    pub(crate) local_no_context_takeover: bool,
    /// The peer resets its compressor after each message.
    pub(crate) remote_no_context_takeover: bool,
}

/// Server: the answer to one client offer under `policy`, or `None` when the offer
/// cannot be accepted (RFC 7692 §7.1: the server declines and may try the next offer).
pub(crate) fn answer_offer(
    offer: &DeflateParams,
    policy: &ServerPolicy,
) -> Option<(DeflateParams, Agreement)> {
    let server_max_window_bits = match offer.server_max_window_bits {
        Some(asked) => Some(asked.min(policy.server_max_window_bits)),
        None if policy.server_max_window_bits < MAX_WINDOW_BITS => {
            Some(policy.server_max_window_bits)
        }
        None => None,
    };
    let client_max_window_bits = match offer.client_max_window_bits {
        // The client did not say it can limit its window: we cannot ask it to.
        ClientWindow::Absent if policy.client_max_window_bits < MAX_WINDOW_BITS => return None,
        ClientWindow::Absent => ClientWindow::Absent,
        ClientWindow::Any if policy.client_max_window_bits < MAX_WINDOW_BITS => {
            ClientWindow::Bits(policy.client_max_window_bits)
        }
        ClientWindow::Any => ClientWindow::Absent,
        ClientWindow::Bits(offered) => {
            ClientWindow::Bits(offered.min(policy.client_max_window_bits))
        }
    };
    let answer = DeflateParams {
        server_no_context_takeover: offer.server_no_context_takeover
            || policy.server_no_context_takeover,
        client_no_context_takeover: offer.client_no_context_takeover
            || policy.client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    };
    let agreement = Agreement {
        local_window_bits: server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
        local_no_context_takeover: answer.server_no_context_takeover,
        remote_no_context_takeover: answer.client_no_context_takeover,
    };
    Some((answer, agreement))
}

/// Client: check the server's answer against what we offered (RFC 7692 §7.1.1.2,
/// §7.1.2.1, §7.1.2.2) and derive what this end keeps to.
pub(crate) fn check_answer(
    offered: &DeflateParams,
    answer: &DeflateParams,
) -> Result<Agreement, ParamError> {
    if offered.server_no_context_takeover && !answer.server_no_context_takeover {
        return Err(ParamError::Unacceptable(
            "server_no_context_takeover was requested and not granted",
        ));
    }
    match (
        offered.server_max_window_bits,
        answer.server_max_window_bits,
    ) {
        (Some(_), None) => {
            return Err(ParamError::Unacceptable(
                "server_max_window_bits was requested and not answered",
            ));
        }
        (Some(asked), Some(given)) if given > asked => {
            return Err(ParamError::Unacceptable(
                "server_max_window_bits is larger than requested",
            ));
        }
        _ => {}
    }
    let local_window_bits = match (
        offered.client_max_window_bits,
        answer.client_max_window_bits,
    ) {
        (_, ClientWindow::Any) => {
            return Err(ParamError::Unacceptable(
                "client_max_window_bits must have a value in an answer",
            ));
        }
        (ClientWindow::Absent, ClientWindow::Bits(_)) => {
            return Err(ParamError::Unacceptable(
                "client_max_window_bits in the answer but not in the offer",
            ));
        }
        (ClientWindow::Bits(offered), ClientWindow::Bits(given)) => offered.min(given),
        (ClientWindow::Any, ClientWindow::Bits(given)) => given,
        (ClientWindow::Bits(offered), ClientWindow::Absent) => offered,
        (_, ClientWindow::Absent) => MAX_WINDOW_BITS,
    };
    Ok(Agreement {
        local_window_bits,
        local_no_context_takeover: offered.client_no_context_takeover
            || answer.client_no_context_takeover,
        remote_no_context_takeover: answer.server_no_context_takeover,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::parse_extensions;

    fn params(header: &str) -> Result<DeflateParams, ParamError> {
        let offers = parse_extensions(header).map_err(|e| ParamError::Unknown(e.to_string()))?;
        DeflateParams::parse(&offers[0])
    }

    #[test]
    fn each_parameter_is_accepted_in_its_valid_forms() {
        assert_eq!(params("permessage-deflate"), Ok(DeflateParams::default()));
        let p = params("permessage-deflate; server_no_context_takeover").unwrap();
        assert!(p.server_no_context_takeover);
        let p = params("permessage-deflate; client_no_context_takeover").unwrap();
        assert!(p.client_no_context_takeover);
        for bits in 8..=15u8 {
            let p = params(&format!(
                "permessage-deflate; server_max_window_bits={bits}"
            ))
            .unwrap();
            assert_eq!(p.server_max_window_bits, Some(bits));
            let p = params(&format!(
                "permessage-deflate; client_max_window_bits={bits}"
            ))
            .unwrap();
            assert_eq!(p.client_max_window_bits, ClientWindow::Bits(bits));
        }
        let p = params("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(p.client_max_window_bits, ClientWindow::Any);
        // A quoted value is the same value (RFC 7692 §7.1: after unquoting).
        let p = params("permessage-deflate; server_max_window_bits=\"10\"").unwrap();
        assert_eq!(p.server_max_window_bits, Some(10));
    }

    #[test]
    fn each_parameter_is_refused_in_its_invalid_forms() {
        for bad in [
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=x",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=1a",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=256",
            "permessage-deflate; client_max_window_bits=-9",
        ] {
            assert!(
                matches!(params(bad), Err(ParamError::InvalidValue { .. })),
                "{bad}: {:?}",
                params(bad)
            );
        }
        // Not even a token once unquoted: the header grammar refuses it first.
        assert!(params("permessage-deflate; server_max_window_bits=\"9 \"").is_err());
        for dup in [
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=9; server_max_window_bits=9",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        ] {
            assert!(
                matches!(params(dup), Err(ParamError::Duplicate(_))),
                "{dup}"
            );
        }
        assert_eq!(
            params("permessage-deflate; x_max_window_bits=10"),
            Err(ParamError::Unknown("x_max_window_bits".into()))
        );
    }

    #[test]
    fn round_trip_through_the_header() {
        let p = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(9),
            client_max_window_bits: ClientWindow::Bits(12),
        };
        assert_eq!(params(&p.to_string()), Ok(p));
    }

    fn open_policy() -> ServerPolicy {
        ServerPolicy {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }

    #[test]
    fn server_grants_what_the_client_asks() {
        let offer = params(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits",
        )
        .unwrap();
        let (answer, agreement) = answer_offer(&offer, &open_policy()).unwrap();
        assert_eq!(
            answer.to_string(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
        assert_eq!(
            agreement,
            Agreement {
                local_window_bits: 10,
                local_no_context_takeover: true,
                remote_no_context_takeover: true
            }
        );
    }

    #[test]
    fn server_policy_limits_the_answer() {
        let policy = ServerPolicy {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 11,
            client_max_window_bits: 9,
        };
        let offer = params("permessage-deflate; client_max_window_bits").unwrap();
        let (answer, agreement) = answer_offer(&offer, &policy).unwrap();
        assert_eq!(
            answer.to_string(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11; client_max_window_bits=9"
        );
        assert_eq!(agreement.local_window_bits, 11);
        // A smaller request than the policy's wins.
        let offer =
            params("permessage-deflate; server_max_window_bits=8; client_max_window_bits=8")
                .unwrap();
        let (answer, _) = answer_offer(&offer, &policy).unwrap();
        assert_eq!(answer.server_max_window_bits, Some(8));
        assert_eq!(answer.client_max_window_bits, ClientWindow::Bits(8));
        // A client that cannot limit its window is declined by a server that needs it.
        let offer = params("permessage-deflate").unwrap();
        assert!(answer_offer(&offer, &policy).is_none());
        assert!(answer_offer(&offer, &open_policy()).is_some());
    }

    #[test]
    fn client_checks_the_answer() {
        let offered = params("permessage-deflate; client_max_window_bits").unwrap();
        let ok = |answer: &str| check_answer(&offered, &params(answer).unwrap());
        assert_eq!(
            ok("permessage-deflate"),
            Ok(Agreement {
                local_window_bits: 15,
                local_no_context_takeover: false,
                remote_no_context_takeover: false
            })
        );
        let agreement = ok("permessage-deflate; client_max_window_bits=9; client_no_context_takeover; server_no_context_takeover; server_max_window_bits=12").unwrap();
        assert_eq!(
            agreement,
            Agreement {
                local_window_bits: 9,
                local_no_context_takeover: true,
                remote_no_context_takeover: true
            }
        );
        assert!(ok("permessage-deflate; client_max_window_bits").is_err());

        let strict =
            params("permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
                .unwrap();
        let check = |answer: &str| check_answer(&strict, &params(answer).unwrap());
        assert!(
            check("permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
                .is_ok()
        );
        assert!(
            check("permessage-deflate; server_no_context_takeover; server_max_window_bits=9")
                .is_ok()
        );
        assert!(check("permessage-deflate; server_max_window_bits=10").is_err());
        assert!(check("permessage-deflate; server_no_context_takeover").is_err());
        assert!(
            check("permessage-deflate; server_no_context_takeover; server_max_window_bits=11")
                .is_err()
        );
        assert!(check("permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=10").is_err());
    }
}
