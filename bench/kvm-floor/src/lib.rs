//! Helpers shared by the benchmark binaries (`boot-bench`, `snapshot-bench`, `blk-bench`):
//! the statistics they print. The `kvm-floor` runner itself is `src/main.rs`.

/// The median of `values` (the mean of the two middle ones for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.is_empty() {
        f64::NAN
    } else if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// Median, minimum and maximum of `values`.
pub fn spread(values: Vec<f64>) -> (f64, f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(values), min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn spread_reports_median_min_max() {
        assert_eq!(spread(vec![5.0, 1.0, 9.0]), (5.0, 1.0, 9.0));
    }
}
