"""flavors/matching.py: whether a user rule's attributes match a user's authentication."""

import pytest

from flavors.matching import attribute_matches, attributes_match, attributes_problems


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        # a text is a regular expression over the whole value ...
        (r"^a.*@uni\.edu$", "ada@uni.edu", True),
        (r"a.*", "ada", True),
        (r"da", "ada", False),  # whole value, not a search
        (r"ada|bob", "bob", True),
        # ... else a glob ...
        ("*@uni.edu", "ada@uni.edu", True),  # not a valid regex: "*" has nothing to repeat
        ("user?", "user1", True),
        ("[!x]*", "ada", True),
        ("*@uni.edu", "ada@other.edu", False),
        # ... else equal text (neither a valid regex nor a matching glob)
        ("(ada", "(ada", True),
        ("(ada", "ada", False),
        # case counts everywhere
        ("Ada", "ada", False),
        ("A*", "ada", False),
    ],
)
def test_a_text_pattern_is_a_regex_then_a_glob_then_equal_text(pattern, value, matches):
    assert attribute_matches(pattern, value) is matches


def test_a_list_pattern_matches_by_membership_only():
    assert attribute_matches(["hpc", "staff"], "staff")
    assert not attribute_matches(["hpc", "staff"], "st.*")
    assert not attribute_matches(["h.*"], "hpc")  # list items are literal values


def test_a_list_of_user_values_matches_when_any_value_does():
    assert attribute_matches(["staff"], ["students", "staff"])
    assert attribute_matches("stud.*", ["staff", "students"])
    assert not attribute_matches(["admins"], ["students", "staff"])
    assert not attribute_matches("anything", [])


def test_user_values_that_are_not_text_are_compared_as_text():
    assert attribute_matches(["1000"], 1000)
    assert attribute_matches(r"\d+", [7, None])
    assert not attribute_matches(".*", None)


def test_a_rule_matches_when_any_of_its_attributes_does():
    attributes = {"name": "ada", "groups": ["staff"]}
    assert attributes_match(attributes, {"name": "ada", "groups": ["students"]})
    assert attributes_match(attributes, {"name": "bob", "groups": ["staff"]})
    assert not attributes_match(attributes, {"name": "bob", "groups": ["students"]})


def test_an_attribute_the_user_lacks_never_matches_and_no_attributes_match_nobody():
    assert not attributes_match({"groups": ".*"}, {"name": "ada"})
    assert not attributes_match({}, {"name": "ada"})


def test_attribute_patterns_must_be_texts_or_lists_of_texts():
    assert attributes_problems({"name": "a.*", "groups": ["x", "y"]}) == []
    assert attributes_problems({"uid": 5, "groups": ["x", 1]}) == [
        "uid: a pattern is a text or a list of texts",
        "groups: a pattern is a text or a list of texts",
    ]
    # every attribute is checked, also after a good one
    assert attributes_problems({"name": "a.*", "uid": 5}) == [
        "uid: a pattern is a text or a list of texts"
    ]
    assert attributes_problems({"groups": ["x"], "uid": 5}) == [
        "uid: a pattern is a text or a list of texts"
    ]
    assert attributes_problems(["groups"]) == [
        'must be a JSON object of attribute names to patterns, e.g. {"groups": ["hpc"]}'
    ]
