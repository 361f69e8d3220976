//! Batches of tensor requests: which requests may share a run, and how their inputs are joined
//! into one run and the outputs cut back into each request's rows.

use super::manager::ServingError;
use super::tensor::{NamedTensor, TensorData};

/// A tensor request: validated inputs (first dimension is the batch) and the outputs wanted.
pub struct TensorRequest {
    /// Inputs.
    pub inputs: Vec<NamedTensor>,
    /// Outputs to produce.
    pub outputs: Vec<String>,
}

/// Tensor requests may share a run when they agree on inputs, types, non-batch shapes and
/// outputs.
pub fn tensors_compatible(a: &TensorRequest, b: &TensorRequest) -> bool {
    a.outputs == b.outputs
        && a.inputs.len() == b.inputs.len()
        && a.inputs.iter().all(|x| {
            b.inputs.iter().any(|y| {
                y.name == x.name
                    && y.data.data_type() == x.data.data_type()
                    && y.shape.get(1..) == x.shape.get(1..)
            })
        })
}

/// Rows of a tensor request: its batch dimension.
pub fn tensor_rows(r: &TensorRequest) -> usize {
    r.inputs
        .first()
        .and_then(|t| t.shape.first())
        .map_or(1, |b| usize::try_from(*b).unwrap_or(0))
}

/// Runs tensor requests as one: concatenates their inputs, runs `run`, and cuts the outputs
/// back into each request's rows.
pub fn run_merged(
    requests: Vec<TensorRequest>,
    run: impl FnOnce(&[NamedTensor], &[String]) -> Result<Vec<NamedTensor>, ServingError>,
) -> Result<Vec<Vec<NamedTensor>>, ServingError> {
    if let [one] = requests.as_slice() {
        // Nothing to join or cut: spare the copies.
        return Ok(vec![run(&one.inputs, &one.outputs)?]);
    }
    let rows: Vec<usize> = requests.iter().map(tensor_rows).collect();
    let merged = merge(&requests)?;
    let outputs = run(&merged, &requests[0].outputs)?;
    split(&outputs, &rows)
}

/// Concatenates the requests' inputs along the batch dimension.
fn merge(batch: &[TensorRequest]) -> Result<Vec<NamedTensor>, ServingError> {
    let seed = &batch[0];
    let rows: usize = batch.iter().map(tensor_rows).sum();
    seed.inputs
        .iter()
        .map(|first| {
            let mut data = first.data.clone();
            for job in &batch[1..] {
                let other = job
                    .inputs
                    .iter()
                    .find(|t| t.name == first.name)
                    .ok_or_else(|| {
                        ServingError::Invalid(format!(
                            "input {:?} missing from a batched request",
                            first.name
                        ))
                    })?;
                append(&mut data, &other.data)?;
            }
            let mut shape = first.shape.clone();
            if let Some(b) = shape.first_mut() {
                *b = rows as i64;
            }
            Ok(NamedTensor {
                name: first.name.clone(),
                shape,
                data,
            })
        })
        .collect()
}

fn append(into: &mut TensorData, from: &TensorData) -> Result<(), ServingError> {
    match (into, from) {
        (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(b),
        (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(b),
        (TensorData::I8(a), TensorData::I8(b)) => a.extend_from_slice(b),
        (TensorData::I32(a), TensorData::I32(b)) => a.extend_from_slice(b),
        (TensorData::I64(a), TensorData::I64(b)) => a.extend_from_slice(b),
        (TensorData::U32(a), TensorData::U32(b)) => a.extend_from_slice(b),
        (TensorData::U64(a), TensorData::U64(b)) => a.extend_from_slice(b),
        (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
        (TensorData::F64(a), TensorData::F64(b)) => a.extend_from_slice(b),
        _ => {
            return Err(ServingError::Invalid(
                "batched requests differ in datatype".into(),
            ));
        }
    }
    Ok(())
}

/// Cuts each output back into the requests' rows.
fn split(outputs: &[NamedTensor], batch: &[usize]) -> Result<Vec<Vec<NamedTensor>>, ServingError> {
    let rows: usize = batch.iter().sum();
    let mut parts: Vec<Vec<NamedTensor>> = batch.iter().map(|_| Vec::new()).collect();
    for out in outputs {
        if out.shape.first().map(|b| *b as usize) != Some(rows) || rows == 0 {
            return Err(ServingError::Invalid(format!(
                "output {:?} has shape {:?}, which cannot be split into a batch of {rows}",
                out.name, out.shape
            )));
        }
        let per_row = out.data.len() / rows;
        let mut offset = 0;
        for (job_rows, part) in batch.iter().zip(parts.iter_mut()) {
            let range = offset * per_row..(offset + job_rows) * per_row;
            let data = slice(&out.data, range);
            let mut shape = out.shape.clone();
            shape[0] = *job_rows as i64;
            part.push(NamedTensor {
                name: out.name.clone(),
                shape,
                data,
            });
            offset += job_rows;
        }
    }
    Ok(parts)
}

fn slice(data: &TensorData, range: std::ops::Range<usize>) -> TensorData {
    match data {
        TensorData::Bool(v) => TensorData::Bool(v[range].to_vec()),
        TensorData::U8(v) => TensorData::U8(v[range].to_vec()),
        TensorData::I8(v) => TensorData::I8(v[range].to_vec()),
        TensorData::I32(v) => TensorData::I32(v[range].to_vec()),
        TensorData::I64(v) => TensorData::I64(v[range].to_vec()),
        TensorData::U32(v) => TensorData::U32(v[range].to_vec()),
        TensorData::U64(v) => TensorData::U64(v[range].to_vec()),
        TensorData::F32(v) => TensorData::F32(v[range].to_vec()),
        TensorData::F64(v) => TensorData::F64(v[range].to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(rows: usize, width: i64, value: f32) -> TensorRequest {
        TensorRequest {
            inputs: vec![NamedTensor {
                name: "x".into(),
                shape: vec![rows as i64, width],
                data: TensorData::F32(vec![value; rows * width as usize]),
            }],
            outputs: vec!["y".into()],
        }
    }

    #[test]
    fn merged_requests_run_once_and_get_their_own_rows() {
        let runs = std::cell::Cell::new(0);
        // Doubles every element: each request must get back its own values.
        let double = |inputs: &[NamedTensor], _: &[String]| {
            runs.set(runs.get() + 1);
            let TensorData::F32(v) = &inputs[0].data else {
                unreachable!()
            };
            Ok(vec![NamedTensor {
                name: "y".into(),
                shape: inputs[0].shape.clone(),
                data: TensorData::F32(v.iter().map(|x| x * 2.0).collect()),
            }])
        };
        let requests = vec![request(2, 2, 1.0), request(1, 2, 5.0), request(3, 2, 7.0)];
        let parts = run_merged(requests, double).unwrap();
        assert_eq!(runs.get(), 1);
        assert_eq!(parts[0][0].shape, vec![2, 2]);
        assert_eq!(parts[0][0].data, TensorData::F32(vec![2.0; 4]));
        assert_eq!(parts[1][0].data, TensorData::F32(vec![10.0; 2]));
        assert_eq!(parts[2][0].shape, vec![3, 2]);
        assert_eq!(parts[2][0].data, TensorData::F32(vec![14.0; 6]));
    }

    #[test]
    fn requests_of_other_shapes_or_outputs_do_not_share_a_run() {
        assert!(tensors_compatible(&request(1, 2, 0.0), &request(4, 2, 1.0)));
        assert!(!tensors_compatible(
            &request(1, 2, 0.0),
            &request(1, 3, 0.0)
        ));
        let mut other = request(1, 2, 0.0);
        other.outputs = vec!["z".into()];
        assert!(!tensors_compatible(&request(1, 2, 0.0), &other));
    }
}
