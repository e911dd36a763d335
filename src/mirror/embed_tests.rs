//! The embeddings answer's checks, cosine, and cutting long texts.

use super::*;

fn answer(data: &[(usize, &[f32])]) -> Answer {
    Answer {
        data: data
            .iter()
            .map(|(index, v)| Embedding {
                index: *index,
                embedding: v.to_vec(),
            })
            .collect(),
    }
}

#[test]
fn vectors_come_back_in_input_order_and_normalised() {
    let got = vectors_in_order(answer(&[(1, &[0.0, 2.0]), (0, &[3.0, 4.0])]), 2).unwrap();
    assert_eq!(&*got[0], &[0.6, 0.8]);
    assert_eq!(&*got[1], &[0.0, 1.0]);
}

#[test]
fn an_answer_missing_a_vector_or_mixing_dimensions_or_zero_is_refused() {
    assert!(vectors_in_order(answer(&[(0, &[1.0])]), 2).is_none());
    assert!(vectors_in_order(answer(&[(0, &[1.0]), (1, &[1.0, 0.0])]), 2).is_none());
    assert!(vectors_in_order(answer(&[(0, &[0.0, 0.0])]), 1).is_none());
    assert!(vectors_in_order(answer(&[(5, &[1.0])]), 1).is_none());
    assert!(vectors_in_order(answer(&[(0, &[f32::NAN])]), 1).is_none());
}

#[test]
fn cosine_of_unit_vectors_and_of_mismatched_dimensions() {
    assert_eq!(
        cosine(&[0.6, 0.8], &[0.6, 0.8]).map(|c| (c * 1e6).round()),
        Some(1e6)
    );
    assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), Some(0.0));
    assert_eq!(cosine(&[1.0], &[1.0, 0.0]), None);
}

#[test]
fn a_long_text_is_cut_at_a_character_boundary() {
    let text = "猫".repeat(MAX_TEXT);
    let cut = cut(&text);
    assert!(cut.len() <= MAX_TEXT && cut.len() > MAX_TEXT - 3);
    assert!(cut.chars().all(|c| c == '猫'));
}
