//! The handful of ONNX protobuf messages an inference graph of convolutions needs, declared by hand
//! with `prost` from the field numbers of the ONNX specification (onnx.proto, proto2 syntax:
//! repeated scalars are written unpacked), and a small builder for graphs.

use prost::Message;

/// ONNX `TensorProto.DataType` values used here.
pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;

/// ONNX `AttributeProto.AttributeType` values used here.
const ATTRIBUTE_FLOAT: i32 = 1;
const ATTRIBUTE_INT: i32 = 2;
const ATTRIBUTE_STRING: i32 = 3;
const ATTRIBUTE_INTS: i32 = 7;

/// IR version 8 is the one that goes with opset 18.
pub const IR_VERSION: i64 = 8;
/// Opset 18: `Resize` takes an `axes` attribute, so a resize to a fixed (H, W) leaves the batch
/// dimension dynamic.
pub const OPSET: i64 = 18;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "4")]
    pub domain: String,
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(string, tag = "10")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian values, as ONNX's `raw_data`.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

pub fn attribute_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: value,
        r#type: ATTRIBUTE_INT,
        ..Default::default()
    }
}

pub fn attribute_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        r#type: ATTRIBUTE_INTS,
        ..Default::default()
    }
}

pub fn attribute_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f: value,
        r#type: ATTRIBUTE_FLOAT,
        ..Default::default()
    }
}

pub fn attribute_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: value.as_bytes().to_vec(),
        r#type: ATTRIBUTE_STRING,
        ..Default::default()
    }
}

/// A float tensor input or output with a dynamic first (batch) dimension.
pub fn batched_value(name: &str, fixed_dims: &[i64]) -> ValueInfoProto {
    let mut dim = vec![Dimension {
        dim_value: None,
        dim_param: Some("batch".into()),
    }];
    dim.extend(fixed_dims.iter().map(|&value| Dimension {
        dim_value: Some(value),
        dim_param: None,
    }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

/// Accumulates nodes and initializers; every node gets a unique name and output.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
}

impl GraphBuilder {
    /// Adds a float initializer and returns its name.
    pub fn float_initializer(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        let raw_data = values
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect();
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: FLOAT,
            name: name.into(),
            raw_data,
        });
        name.into()
    }

    /// Adds an int64 initializer and returns its name.
    pub fn int64_initializer(&mut self, name: &str, dims: &[i64], values: &[i64]) -> String {
        let raw_data = values
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect();
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: INT64,
            name: name.into(),
            raw_data,
        });
        name.into()
    }

    /// Adds a node with the given outputs (named by the caller).
    pub fn node_with_outputs(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) {
        let name = format!("{op_type}_{}", self.nodes.len());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|input| input.to_string()).collect(),
            output: outputs.iter().map(|output| output.to_string()).collect(),
            name,
            op_type: op_type.into(),
            attribute,
        });
    }

    /// Adds a node with one output, named after the node, and returns that name.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> String {
        let output = format!("{op_type}_{}_out", self.nodes.len());
        self.node_with_outputs(op_type, inputs, &[&output], attribute);
        output
    }

    /// The finished model.
    pub fn into_model(
        self,
        graph_name: &str,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        doc_string: &str,
        metadata: Vec<(String, String)>,
    ) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "phenoflow pf-export".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            domain: "org.phenoflow".into(),
            model_version: 1,
            doc_string: doc_string.into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: graph_name.into(),
                initializer: self.initializers,
                doc_string: doc_string.into(),
                input: inputs,
                output: outputs,
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            metadata_props: metadata
                .into_iter()
                .map(|(key, value)| StringStringEntryProto { key, value })
                .collect(),
        }
    }
}
