//! The node's parameter services (`ros2 param list/get/describe/set`), served here rather than by
//! r2r's handler: descriptions come from the parameter table, read-only parameters say so, and a set
//! is checked like a start-up parameter before it takes effect (`config::updated_params`).

use futures::Stream;
use r2r::rcl_interfaces::msg::{
    ParameterDescriptor, ParameterEvent, ParameterType, ParameterValue as ValueMsg,
    SetParametersResult,
};
use r2r::rcl_interfaces::srv::{
    DescribeParameters, GetParameterTypes, GetParameters, ListParameters, SetParameters,
    SetParametersAtomically,
};
use r2r::{QosProfile, ServiceRequest};

use crate::config::{
    parameter_doc, ParamDefault, ParamValue, Params, PARAMETERS, RUNTIME_PARAMETERS,
};

use super::drain;

type Requests<T> = Box<dyn Stream<Item = ServiceRequest<T>> + Unpin>;

/// The services' request streams and the /parameter_events publisher.
pub struct ParameterServices {
    list: Requests<ListParameters::Service>,
    get: Requests<GetParameters::Service>,
    types: Requests<GetParameterTypes::Service>,
    describe: Requests<DescribeParameters::Service>,
    set: Requests<SetParameters::Service>,
    set_atomically: Requests<SetParametersAtomically::Service>,
    events: r2r::Publisher<ParameterEvent>,
    node_name: String,
}

/// What the node does with a set: `apply` takes the changes (all of them, atomically) and answers
/// Ok or the reason they were refused.
pub trait ParameterHost {
    fn params(&self) -> &Params;
    /// Whether a parameter is read-only now (the node is configured and it is not a run-time one).
    fn read_only(&self, name: &str) -> bool;
    fn apply(&mut self, changes: &[(String, ParamValue)]) -> Result<(), String>;
}

impl ParameterServices {
    pub fn create(node: &mut r2r::Node) -> anyhow::Result<Self> {
        let qos = QosProfile::services_default;
        Ok(ParameterServices {
            list: Box::new(
                node.create_service::<ListParameters::Service>("~/list_parameters", qos())?,
            ),
            get: Box::new(
                node.create_service::<GetParameters::Service>("~/get_parameters", qos())?,
            ),
            types: Box::new(
                node.create_service::<GetParameterTypes::Service>("~/get_parameter_types", qos())?,
            ),
            describe: Box::new(
                node.create_service::<DescribeParameters::Service>("~/describe_parameters", qos())?,
            ),
            set: Box::new(
                node.create_service::<SetParameters::Service>("~/set_parameters", qos())?,
            ),
            set_atomically: Box::new(node.create_service::<SetParametersAtomically::Service>(
                "~/set_parameters_atomically",
                qos(),
            )?),
            events: node.create_publisher("/parameter_events", QosProfile::parameter_events())?,
            node_name: node.fully_qualified_name()?,
        })
    }

    /// Answers every pending request.
    pub fn serve(&mut self, host: &mut dyn ParameterHost) {
        drain(&mut self.list, |req| {
            let mut names: Vec<String> = PARAMETERS.iter().map(|p| p.name.to_string()).collect();
            for k in host.params().keys() {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
            let prefixes = &req.message.prefixes;
            names.retain(|n| {
                prefixes.is_empty()
                    || prefixes
                        .iter()
                        .any(|p| n == p || n.starts_with(&format!("{p}.")))
            });
            let result = r2r::rcl_interfaces::msg::ListParametersResult {
                names,
                prefixes: Vec::new(),
            };
            respond(req.respond(ListParameters::Response { result }));
        });
        drain(&mut self.get, |req| {
            let values = req
                .message
                .names
                .iter()
                .map(|n| value_msg(effective(host.params(), n).as_ref()))
                .collect();
            respond(req.respond(GetParameters::Response { values }));
        });
        drain(&mut self.types, |req| {
            let types = req
                .message
                .names
                .iter()
                .map(|n| value_msg(effective(host.params(), n).as_ref()).type_)
                .collect();
            respond(req.respond(GetParameterTypes::Response { types }));
        });
        drain(&mut self.describe, |req| {
            let descriptors = req
                .message
                .names
                .iter()
                .map(|n| ParameterDescriptor {
                    name: n.clone(),
                    type_: value_msg(effective(host.params(), n).as_ref()).type_,
                    description: parameter_doc(n).unwrap_or("").to_string(),
                    read_only: host.read_only(n),
                    additional_constraints: if RUNTIME_PARAMETERS.contains(&n.as_str()) {
                        "run time: checked like at start-up, in effect from the next chunk".into()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                })
                .collect();
            respond(req.respond(DescribeParameters::Response { descriptors }));
        });
        let mut changed = Vec::new();
        drain(&mut self.set, |req| {
            // One result per parameter, each applied on its own (the SetParameters contract).
            let results = req
                .message
                .parameters
                .iter()
                .map(|p| {
                    let change = [(p.name.clone(), param_value(&p.value))];
                    let outcome = set_one(host, &change);
                    if outcome.successful {
                        changed.push(p.clone());
                    }
                    outcome
                })
                .collect();
            respond(req.respond(SetParameters::Response { results }));
        });
        drain(&mut self.set_atomically, |req| {
            let changes: Vec<(String, ParamValue)> = req
                .message
                .parameters
                .iter()
                .map(|p| (p.name.clone(), param_value(&p.value)))
                .collect();
            let result = set_one(host, &changes);
            if result.successful {
                changed.extend(req.message.parameters.iter().cloned());
            }
            respond(req.respond(SetParametersAtomically::Response { result }));
        });
        if !changed.is_empty() {
            let event = ParameterEvent {
                node: self.node_name.clone(),
                changed_parameters: changed,
                ..Default::default()
            };
            if let Err(e) = self.events.publish(&event) {
                tracing::warn!(error = %e, "cannot publish /parameter_events");
            }
        }
    }
}

fn set_one(host: &mut dyn ParameterHost, changes: &[(String, ParamValue)]) -> SetParametersResult {
    match host.apply(changes) {
        Ok(()) => {
            for (name, value) in changes {
                tracing::info!(parameter = %name, value = ?value, "parameter set");
            }
            SetParametersResult {
                successful: true,
                reason: String::new(),
            }
        }
        Err(reason) => SetParametersResult {
            successful: false,
            reason,
        },
    }
}

fn respond(result: r2r::Result<()>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot answer a parameter request");
    }
}

/// The value a parameter has: set, or the table's default (None: unset).
fn effective(params: &Params, name: &str) -> Option<ParamValue> {
    if let Some(v) = params.get(name) {
        return Some(v.clone());
    }
    let spec = PARAMETERS.iter().find(|p| p.name == name)?;
    match spec.default {
        ParamDefault::Bool(b) => Some(ParamValue::Bool(b)),
        ParamDefault::Integer(i) => Some(ParamValue::Integer(i as i64)),
        ParamDefault::Double(d) => Some(ParamValue::Double(d)),
        ParamDefault::Str(s) => Some(ParamValue::String(s.to_string())),
        ParamDefault::Unset => None,
    }
}

fn value_msg(v: Option<&ParamValue>) -> ValueMsg {
    let mut m = ValueMsg::default();
    match v {
        None => m.type_ = ParameterType::PARAMETER_NOT_SET as u8,
        Some(ParamValue::Bool(b)) => {
            m.type_ = ParameterType::PARAMETER_BOOL as u8;
            m.bool_value = *b;
        }
        Some(ParamValue::Integer(i)) => {
            m.type_ = ParameterType::PARAMETER_INTEGER as u8;
            m.integer_value = *i;
        }
        Some(ParamValue::Double(d)) => {
            m.type_ = ParameterType::PARAMETER_DOUBLE as u8;
            m.double_value = *d;
        }
        Some(ParamValue::String(s)) => {
            m.type_ = ParameterType::PARAMETER_STRING as u8;
            m.string_value = s.clone();
        }
        Some(ParamValue::BoolArray(v)) => {
            m.type_ = ParameterType::PARAMETER_BOOL_ARRAY as u8;
            m.bool_array_value = v.clone();
        }
        Some(ParamValue::IntegerArray(v)) => {
            m.type_ = ParameterType::PARAMETER_INTEGER_ARRAY as u8;
            m.integer_array_value = v.clone();
        }
        Some(ParamValue::DoubleArray(v)) => {
            m.type_ = ParameterType::PARAMETER_DOUBLE_ARRAY as u8;
            m.double_array_value = v.clone();
        }
        Some(ParamValue::StringArray(v)) => {
            m.type_ = ParameterType::PARAMETER_STRING_ARRAY as u8;
            m.string_array_value = v.clone();
        }
    }
    m
}

/// A set request's value (a byte array is taken as integers; "not set" as an empty string, which the
/// checks then refuse by name).
fn param_value(m: &ValueMsg) -> ParamValue {
    use ParameterType as T;
    match m.type_ {
        t if t == T::PARAMETER_BOOL as u8 => ParamValue::Bool(m.bool_value),
        t if t == T::PARAMETER_INTEGER as u8 => ParamValue::Integer(m.integer_value),
        t if t == T::PARAMETER_DOUBLE as u8 => ParamValue::Double(m.double_value),
        t if t == T::PARAMETER_BYTE_ARRAY as u8 => {
            ParamValue::IntegerArray(m.byte_array_value.iter().map(|b| i64::from(*b)).collect())
        }
        t if t == T::PARAMETER_BOOL_ARRAY as u8 => {
            ParamValue::BoolArray(m.bool_array_value.clone())
        }
        t if t == T::PARAMETER_INTEGER_ARRAY as u8 => {
            ParamValue::IntegerArray(m.integer_array_value.clone())
        }
        t if t == T::PARAMETER_DOUBLE_ARRAY as u8 => {
            ParamValue::DoubleArray(m.double_array_value.clone())
        }
        t if t == T::PARAMETER_STRING_ARRAY as u8 => {
            ParamValue::StringArray(m.string_array_value.clone())
        }
        _ => ParamValue::String(m.string_value.clone()),
    }
}
