//! Prints the JSON schema of the chart's values (`helm/frlab/values.schema.json`), generated
//! from `lab_values::Values`. `make chart-schema` writes it; a test checks it is current.

fn main() {
    print!("{}", lab_values::schema_json());
}
