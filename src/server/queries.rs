//! Mode 6 queries (ntpq, monitoring tools): who may ask, and what is
//! answered. The answers come from above the server (the sync thread's
//! reports, the published state) through [`ControlQueries`], which the
//! daemon implements; the encoding is `proto::control`'s.

use crate::proto::control::{
    association_list, format_variables, refuse_control, respond_control, wanted_names,
    ControlError, ControlRequest, OP_READSTAT, OP_READVAR,
};

/// What mode 6 queries read. Variables are `(name, value)` pairs in the
/// order they are shown, values already formatted as ntpd formats them.
pub trait ControlQueries: Send + Sync {
    /// Every association's identifier and status word.
    fn associations(&self) -> Vec<(u16, u16)>;
    /// The system status word and the system variables.
    fn system_variables(&self) -> (u16, Vec<(&'static str, String)>);
    /// An association's status word and variables; `None` if unknown.
    fn association_variables(&self, association: u16)
        -> Option<(u16, Vec<(&'static str, String)>)>;
}

/// The datagrams that answer `req`: READSTAT and READVAR, for the system
/// (association 0) or one association; any other operation is refused.
pub fn answer(req: &ControlRequest<'_>, queries: &dyn ControlQueries) -> Vec<Vec<u8>> {
    let refuse = |error| vec![refuse_control(req, error)];
    match (req.opcode, req.association) {
        (OP_READSTAT, 0) => {
            let (status, _) = queries.system_variables();
            respond_control(req, status, &association_list(&queries.associations()))
        }
        (OP_READSTAT, id) => match queries.association_variables(id) {
            Some((status, _)) => respond_control(req, status, &[]),
            None => refuse(ControlError::UnknownAssociation),
        },
        (OP_READVAR, 0) => {
            let (status, variables) = queries.system_variables();
            let text = format_variables(&variables, &wanted_names(req.data));
            respond_control(req, status, text.as_bytes())
        }
        (OP_READVAR, id) => match queries.association_variables(id) {
            Some((status, variables)) => {
                let text = format_variables(&variables, &wanted_names(req.data));
                respond_control(req, status, text.as_bytes())
            }
            None => refuse(ControlError::UnknownAssociation),
        },
        // Writes, configuration, traps, the MRU list, nonces: never.
        _ => refuse(ControlError::Permission),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::control::parse_control_request;

    struct Fixed;

    impl ControlQueries for Fixed {
        fn associations(&self) -> Vec<(u16, u16)> {
            vec![(1, 0x9600), (2, 0x9400)]
        }
        fn system_variables(&self) -> (u16, Vec<(&'static str, String)>) {
            (
                0x0615,
                vec![("stratum", "2".into()), ("offset", "0.001".into())],
            )
        }
        fn association_variables(&self, id: u16) -> Option<(u16, Vec<(&'static str, String)>)> {
            (id == 1).then(|| (0x9600, vec![("srcadr", "192.0.2.1".into())]))
        }
    }

    fn ask(opcode: u8, association: u16, data: &[u8]) -> Vec<Vec<u8>> {
        let mut r = vec![(2 << 3) | 6, opcode, 0, 1, 0, 0];
        r.extend(association.to_be_bytes());
        r.extend([0, 0]);
        r.extend((data.len() as u16).to_be_bytes());
        r.extend(data);
        answer(&parse_control_request(&r).unwrap(), &Fixed)
    }

    fn data(fragment: &[u8]) -> &[u8] {
        let count = u16::from_be_bytes([fragment[10], fragment[11]]) as usize;
        &fragment[12..12 + count]
    }

    #[test]
    fn readstat_lists_the_associations() {
        let out = ask(OP_READSTAT, 0, b"");
        assert_eq!(out.len(), 1);
        assert_eq!(data(&out[0]), [0, 1, 0x96, 0, 0, 2, 0x94, 0]);
        assert_eq!(&out[0][4..6], &[0x06, 0x15], "system status");
    }

    #[test]
    fn readvar_answers_the_system_and_each_association() {
        assert_eq!(
            data(&ask(OP_READVAR, 0, b"")[0]),
            b"stratum=2, offset=0.001\r\n"
        );
        assert_eq!(data(&ask(OP_READVAR, 0, b"offset")[0]), b"offset=0.001\r\n");
        let peer = ask(OP_READVAR, 1, b"");
        assert_eq!(&peer[0][4..6], &[0x96, 0x00], "peer status");
        assert_eq!(data(&peer[0]), b"srcadr=192.0.2.1\r\n");
        let unknown = ask(OP_READVAR, 9, b"");
        assert_eq!(unknown[0][1] & 0x40, 0x40, "error bit");
        assert_eq!(unknown[0][4], ControlError::UnknownAssociation as u8);
    }

    #[test]
    fn nothing_else_is_done() {
        for opcode in [3u8, 4, 5, 6, 7, 8, 9, 10, 11, 12, 31] {
            let out = ask(opcode, 0, b"x=1");
            assert_eq!(out.len(), 1);
            assert_eq!(out[0][1] & 0x40, 0x40, "opcode {opcode} refused");
            assert_eq!(out[0][4], ControlError::Permission as u8);
        }
    }
}
