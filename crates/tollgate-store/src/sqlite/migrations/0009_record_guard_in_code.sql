-- 9: the usage record guard of step 4 moves into the batch insert's own code (insert_batch checks
-- every token and money value is non-negative before it writes; values are bound as i64, so
-- always integers). A BEFORE INSERT trigger that can ABORT makes SQLite open a statement journal
-- for every inserted row, copying each page the row touches (the table and its four indexes):
-- about a third of the cost of recording a request. The rollup guards stay (one upsert per
-- rollup row per batch).
DROP TRIGGER IF EXISTS usage_records_guard;
