//! Text columns as the stages read them: Arrow's `Utf8`, `LargeUtf8` and `Utf8View` (pyarrow,
//! pandas and polars each write a different one) and integer keys, all as strings.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::Array;
use arrow_schema::DataType;

/// A text or integer column as strings (text as Arrow's `Utf8`, `LargeUtf8` or `Utf8View`, as
/// pyarrow, pandas and polars write them); `None` for any other type.
pub fn text_values(array: &dyn Array) -> Option<Vec<Option<String>>> {
    let collect = |get: &dyn Fn(usize) -> String| {
        (0..array.len())
            .map(|row| (!array.is_null(row)).then(|| get(row)))
            .collect()
    };
    match array.data_type() {
        DataType::Utf8 => {
            let strings = array.as_string::<i32>();
            Some(collect(&|row| strings.value(row).to_string()))
        }
        DataType::LargeUtf8 => {
            let strings = array.as_string::<i64>();
            Some(collect(&|row| strings.value(row).to_string()))
        }
        DataType::Utf8View => {
            let strings = array.as_string_view();
            Some(collect(&|row| strings.value(row).to_string()))
        }
        DataType::Int32 => {
            let values = array.as_primitive::<Int32Type>();
            Some(collect(&|row| values.value(row).to_string()))
        }
        DataType::Int64 => {
            let values = array.as_primitive::<Int64Type>();
            Some(collect(&|row| values.value(row).to_string()))
        }
        _ => None,
    }
}
