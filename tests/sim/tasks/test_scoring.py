"""The paper's points from hand-written reasoning strings (sim/tasks/scoring.py)."""

from __future__ import annotations

import pytest

from chatvla2.sim.tasks.scoring import MathTruth, ToyTruth, math_text, score_math, score_toy, toy_text

# docs/reference/model.md's own example: 7+7=14 with the cards 8 (left), 4 (middle), 1 (right).
TRUTH = MathTruth(7, "+", 7, 14, ("8", "4", "1"), (("1", "right"), ("4", "middle")))
FIRST = ("On the whiteboard is 7+7. 7+7=14. There are: 8 (left), 4 (middle), and 1 (right). "
         "I should pick 1(right) and 4(middle). First, pick 1 from right.")
SECOND = ("On the whiteboard is 7+7. 7+7=14. There are: 8 (left), 4 (middle), and 1 (right). "
          "Already picked 1 from right. I should pick 4 from middle.")


def test_the_writer_writes_model_md_template_exactly():
    assert math_text(TRUTH) == FIRST
    assert math_text(TRUTH, picked_first=True) == SECOND


@pytest.mark.parametrize("text", [FIRST, SECOND, "  " + FIRST + "\n"])
def test_correct_reasoning_scores_full_marks(text):
    s = score_math(text, TRUTH)
    assert (s["ocr"], s["math"], s["parsed"]) == (4, 2, True)


def test_wrong_sign_loses_the_two_sign_points_and_the_answer():
    text = FIRST.replace("7+7. 7+7=14", "7-7. 7-7=0")
    s = score_math(text, TRUTH)
    assert (s["ocr_numbers"], s["ocr_cards"], s["ocr_sign"], s["math_answer"], s["math_cards"]) == (1, 1, 0, 0, 1)
    assert (s["ocr"], s["math"]) == (2, 1)


def test_wrong_number_loses_the_numbers_point():
    s = score_math(FIRST.replace("is 7+7.", "is 1+7."), TRUTH)
    assert (s["ocr"], s["math"]) == (3, 2)


def test_misread_cards_lose_the_card_point():
    s = score_math(FIRST.replace("8 (left)", "3 (left)"), TRUTH)
    assert (s["ocr"], s["math"]) == (3, 2)


def test_wrong_card_loses_the_card_choice():
    text = FIRST.replace("I should pick 1(right) and 4(middle). First, pick 1 from right.",
                         "I should pick 1(right) and 8(left). First, pick 1 from right.")
    s = score_math(text, TRUTH)
    assert (s["ocr"], s["math"], s["math_cards"]) == (4, 1, 0)


def test_wrong_position_loses_the_card_choice():
    s = score_math(FIRST.replace("4(middle)", "4(left)"), TRUTH)
    assert (s["ocr"], s["math"]) == (4, 1)


def test_wrong_order_loses_the_card_choice():
    text = FIRST.replace("I should pick 1(right) and 4(middle). First, pick 1 from right.",
                         "I should pick 4(middle) and 1(right). First, pick 4 from middle.")
    s = score_math(text, TRUTH)
    assert (s["ocr"], s["math"], s["math_cards"]) == (4, 1, 0)


def test_second_step_that_names_the_wrong_first_card():
    s = score_math(SECOND.replace("Already picked 1 from right", "Already picked 4 from middle"), TRUTH)
    assert s["math_cards"] == 0 and s["form"] == "B"


@pytest.mark.parametrize("text", ["", "   ", "garbage", FIRST.replace(". ", ".  "), FIRST.lower(), FIRST[:-1],
                                  FIRST + " Then", FIRST.replace("7+7=14", "7+7 = 14"), FIRST.replace("+", "plus"),
                                  FIRST.replace("7+7.", "7×7."), None])
def test_anything_off_template_scores_zero(text):
    s = score_math(text, TRUTH)
    assert (s["ocr"], s["math"], s["parsed"]) == (0, 0, False)


def test_numbers_compare_as_written():
    s = score_math(FIRST.replace("7+7=14", "7+7=014"), TRUTH)
    assert s["math_answer"] == 0


def test_one_step_form():
    truth = MathTruth(18, "+", 16, 34, ("25", "43", "34"), (("34", "right"),))
    text = ("On the whiteboard is 18+16. 18+16=34. There are: 25 (left), 43 (middle), and 34 (right). "
            "I should pick 34(right). Pick 34 from right.")
    assert math_text(truth) == text
    assert (score_math(text, truth)["ocr"], score_math(text, truth)["math"]) == (4, 2)
    wrong = text.replace("I should pick 34(right). Pick 34 from right.", "I should pick 43(middle). Pick 43 from middle.")
    assert score_math(wrong, truth)["math"] == 1
    # A two-step text for a one-step episode chooses the wrong cards.
    assert score_math(FIRST, truth)["math_cards"] == 0


def test_minus_and_times_signs():
    truth = MathTruth(56, "-", 42, 14, ("4", "6", "1"), (("1", "right"), ("4", "left")))
    text = math_text(truth)
    assert text.startswith("On the whiteboard is 56-42. 56-42=14.")
    assert score_math(text, truth)["ocr_sign"] == 2
    assert score_math(text.replace("56-42", "56+42"), truth)["ocr_sign"] == 0
    times = MathTruth(6, "x", 9, 54, ("5", "4", "7"), (("5", "left"), ("4", "middle")))
    assert score_math(math_text(times), times)["ocr"] == 4


# --- toy placement ---------------------------------------------------------------------------------

TOY = ToyTruth("banana", "bowl", "front", obj_box=(400, 300, 520, 390), target_box=(100, 200, 220, 310),
               region=(80, 320, 240, 560), point=(160, 420))
TOY_FIRST = ("The banana is at [400, 300, 520, 390]. The bowl is at [100, 200, 220, 310]. "
             "I should place the banana in front of the bowl, at [160, 420]. First, pick the banana.")
TOY_SECOND = ("Already picked the banana. The bowl is at [100, 200, 220, 310]. "
              "I should place it in front of the bowl, at [160, 420].")


def test_toy_writer_and_full_marks():
    assert toy_text(TOY) == TOY_FIRST
    assert toy_text(TOY, grasped=True) == TOY_SECOND
    for text in (TOY_FIRST, TOY_SECOND):
        s = score_toy(text, TOY)
        assert (s["object_recognition"], s["spatial_affordance"], s["parsed"]) == (1, 1, True)


def test_toy_wrong_object_or_poor_box():
    assert score_toy(TOY_FIRST.replace("The banana is at", "The apple is at"), TOY)["object_recognition"] == 0
    # IoU of [400, 300, 520, 390] with [460, 300, 580, 390] is 60/180 = 0.33: too far off.
    shifted = TOY_FIRST.replace("[400, 300, 520, 390]", "[460, 300, 580, 390]")
    s = score_toy(shifted, TOY)
    assert (s["object_recognition"], s["spatial_affordance"]) == (0, 1) and s["iou"] == pytest.approx(1 / 3, abs=1e-3)
    # IoU 0.6: still recognised.
    assert score_toy(TOY_FIRST.replace("[400, 300, 520, 390]", "[420, 300, 540, 390]"), TOY)["object_recognition"] == 1


def test_toy_point_outside_the_region():
    s = score_toy(TOY_FIRST.replace("at [160, 420]", "at [160, 600]"), TOY)
    assert (s["object_recognition"], s["spatial_affordance"]) == (1, 0)
    # Edges count as inside.
    assert score_toy(TOY_FIRST.replace("at [160, 420]", "at [80, 560]"), TOY)["spatial_affordance"] == 1


def test_shelf_phrases_parse():
    truth = ToyTruth("brown mug", "shelf", "top", (10, 10, 90, 90), (300, 300, 700, 700), (320, 300, 680, 480), (500, 390))
    text = toy_text(truth)
    assert "I should place the brown mug to the top of the shelf, at [500, 390]." in text
    assert score_toy(text, truth)["spatial_affordance"] == 1


@pytest.mark.parametrize("text", ["", "garbage", TOY_FIRST.replace("[400, 300, 520, 390]", "[400,300,520,390]"),
                                  TOY_FIRST.replace("in front of", "next to"), TOY_FIRST.upper(), TOY_SECOND[:-1], None])
def test_toy_off_template_scores_zero(text):
    s = score_toy(text, TOY)
    assert (s["object_recognition"], s["spatial_affordance"], s["parsed"]) == (0, 0, False)
