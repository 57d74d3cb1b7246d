"""The project layout's split reader: what every step reads a split with."""

from components.layout import ProjectLayout


def test_read_split_keeps_every_cell_as_written(tmp_path):
    layout = ProjectLayout(tmp_path)
    layout.splits_dir.mkdir(parents=True)
    layout.split_file("test").write_text("id,text,label,note\n007,NA,positive,\n008,null,negative,x\n",
                                         encoding="utf-8")
    frame = layout.read_split("test")
    assert frame.to_dict("records") == [{"id": "007", "text": "NA", "label": "positive", "note": ""},
                                        {"id": "008", "text": "null", "label": "negative", "note": "x"}]
