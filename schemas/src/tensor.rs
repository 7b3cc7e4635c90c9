//! Pixel tensors stored with Arrow's canonical `arrow.fixed_shape_tensor` extension type: a
//! `FixedSizeList<UInt16>` storage column whose field metadata carries the logical shape, so that
//! pyarrow, polars and friends recognise it as a tensor of shape `[C, H, W]` (row-major).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_schema::{DataType, Field};

use crate::SchemaError;

/// Name of the pixel tensor column in the `cells` table.
pub const PIXELS_COLUMN: &str = "Pixels";

/// Arrow's field-metadata key naming an extension type.
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
/// Arrow's field-metadata key carrying the extension type's own metadata (JSON).
pub const EXTENSION_METADATA_KEY: &str = "ARROW:extension:metadata";
/// The canonical extension name for fixed-shape tensors.
pub const FIXED_SHAPE_TENSOR: &str = "arrow.fixed_shape_tensor";

/// The logical shape of one cell's pixels: channels, height, width (row-major, C outermost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TensorShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl TensorShape {
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// Number of values in one tensor.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The extension-type metadata JSON, as the Arrow specification writes it.
    pub fn extension_metadata(&self) -> String {
        format!(
            "{{\"shape\":[{},{},{}],\"dim_names\":[\"C\",\"H\",\"W\"]}}",
            self.channels, self.height, self.width
        )
    }

    /// The Arrow field of a `uint16` pixel tensor column with this shape.
    pub fn field(&self, name: &str) -> Field {
        let storage = DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::UInt16, true)),
            self.len() as i32,
        );
        let metadata = HashMap::from([
            (
                EXTENSION_NAME_KEY.to_string(),
                FIXED_SHAPE_TENSOR.to_string(),
            ),
            (
                EXTENSION_METADATA_KEY.to_string(),
                self.extension_metadata(),
            ),
        ]);
        Field::new(name, storage, false).with_metadata(metadata)
    }

    /// Reads the shape back from a field, checking that it really is a `uint16` fixed-shape tensor
    /// of rank 3 whose storage length matches the shape.
    pub fn from_field(field: &Field, path: &Path) -> Result<Self, SchemaError> {
        let bad = |reason: String| SchemaError::BadTensor {
            path: path.to_path_buf(),
            column: field.name().clone(),
            reason,
        };
        match field.metadata().get(EXTENSION_NAME_KEY) {
            Some(name) if name == FIXED_SHAPE_TENSOR => {}
            Some(name) => return Err(bad(format!("extension type is `{name}`, expected `{FIXED_SHAPE_TENSOR}`"))),
            None => return Err(bad(format!("no `{EXTENSION_NAME_KEY}` metadata; expected the `{FIXED_SHAPE_TENSOR}` extension type"))),
        }
        let metadata_json = field
            .metadata()
            .get(EXTENSION_METADATA_KEY)
            .ok_or_else(|| bad("extension metadata (the shape) is missing".into()))?;
        let metadata: serde_json::Value = serde_json::from_str(metadata_json)
            .map_err(|error| bad(format!("extension metadata is not JSON: {error}")))?;
        let shape: Vec<usize> = metadata
            .get("shape")
            .and_then(|shape| serde_json::from_value(shape.clone()).ok())
            .ok_or_else(|| {
                bad(format!(
                    "extension metadata has no integer `shape`: {metadata_json}"
                ))
            })?;
        if metadata.get("permutation").is_some_and(|p| !p.is_null()) {
            return Err(bad(
                "permuted tensors are not supported; store row-major [C,H,W]".into(),
            ));
        }
        let [channels, height, width] = shape[..] else {
            return Err(bad(format!(
                "shape {shape:?} has rank {}, expected [C,H,W]",
                shape.len()
            )));
        };
        let tensor_shape = TensorShape::new(channels, height, width);
        match field.data_type() {
            DataType::FixedSizeList(item, size) if item.data_type() == &DataType::UInt16 => {
                if *size as usize != tensor_shape.len() {
                    return Err(bad(format!(
                        "storage holds {size} values per row but shape {shape:?} needs {}",
                        tensor_shape.len()
                    )));
                }
            }
            other => {
                return Err(bad(format!(
                    "storage type is {other}, expected FixedSizeList<UInt16>"
                )))
            }
        }
        Ok(tensor_shape)
    }
}

impl std::fmt::Display for TensorShape {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "[{},{},{}]",
            self.channels, self.height, self.width
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_round_trips_through_the_field() {
        let shape = TensorShape::new(3, 68, 68);
        let field = shape.field(PIXELS_COLUMN);
        assert_eq!(
            TensorShape::from_field(&field, Path::new("x.parquet")).unwrap(),
            shape
        );
    }

    #[test]
    fn storage_length_must_match_shape() {
        let field = TensorShape::new(3, 68, 68).field(PIXELS_COLUMN);
        let mut metadata = field.metadata().clone();
        metadata.insert(
            EXTENSION_METADATA_KEY.to_string(),
            "{\"shape\":[3,64,64]}".to_string(),
        );
        let lying = field.with_metadata(metadata);
        let error = TensorShape::from_field(&lying, Path::new("x.parquet")).unwrap_err();
        assert!(
            error.to_string().contains("13872 values per row"),
            "{error}"
        );
    }

    #[test]
    fn plain_list_is_not_a_tensor() {
        let field = Field::new(PIXELS_COLUMN, DataType::Binary, false);
        let error = TensorShape::from_field(&field, Path::new("x.parquet")).unwrap_err();
        assert!(
            error.to_string().contains("arrow.fixed_shape_tensor"),
            "{error}"
        );
    }
}
