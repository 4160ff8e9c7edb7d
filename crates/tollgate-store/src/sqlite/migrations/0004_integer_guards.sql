-- 4: integer columns hold only integers in range. SQLite turns an overflowing integer sum into a
-- REAL and accepts any type in an INTEGER column; these triggers refuse both (a constraint
-- error: the batch writer sets such a record aside instead of corrupting every total).
CREATE TRIGGER usage_records_guard BEFORE INSERT ON usage_records
WHEN typeof(NEW.input_tokens) != 'integer' OR NEW.input_tokens < 0
  OR typeof(NEW.output_tokens) != 'integer' OR NEW.output_tokens < 0
  OR typeof(NEW.cached_tokens) != 'integer' OR NEW.cached_tokens < 0
  OR typeof(NEW.cache_write_tokens) != 'integer' OR NEW.cache_write_tokens < 0
  OR typeof(NEW.reasoning_tokens) != 'integer' OR NEW.reasoning_tokens < 0
  OR typeof(NEW.cost_nanos) != 'integer' OR NEW.cost_nanos < 0
  OR typeof(NEW.charged_nanos) != 'integer' OR NEW.charged_nanos < 0
  OR typeof(NEW.created_at_ms) != 'integer' OR typeof(NEW.latency_ms) != 'integer'
BEGIN
  SELECT RAISE(ABORT, 'usage record: token and money columns must be non-negative integers');
END;
CREATE TRIGGER credit_entries_guard BEFORE INSERT ON credit_entries
WHEN typeof(NEW.amount_nanos) != 'integer'
BEGIN
  SELECT RAISE(ABORT, 'credit entry: amount_nanos must be an integer');
END;
CREATE TRIGGER usage_rollup_minute_guard BEFORE UPDATE ON usage_rollup_minute
WHEN typeof(NEW.requests) != 'integer' OR typeof(NEW.success) != 'integer'
  OR typeof(NEW.input_tokens) != 'integer' OR typeof(NEW.output_tokens) != 'integer'
  OR typeof(NEW.cached_tokens) != 'integer' OR typeof(NEW.reasoning_tokens) != 'integer'
  OR typeof(NEW.cost_nanos) != 'integer' OR typeof(NEW.charged_nanos) != 'integer'
BEGIN
  SELECT RAISE(ABORT, 'usage rollup: a sum left the integer range');
END;
CREATE TRIGGER usage_rollup_hour_guard BEFORE UPDATE ON usage_rollup_hour
WHEN typeof(NEW.requests) != 'integer' OR typeof(NEW.success) != 'integer'
  OR typeof(NEW.input_tokens) != 'integer' OR typeof(NEW.output_tokens) != 'integer'
  OR typeof(NEW.cached_tokens) != 'integer' OR typeof(NEW.reasoning_tokens) != 'integer'
  OR typeof(NEW.cost_nanos) != 'integer' OR typeof(NEW.charged_nanos) != 'integer'
BEGIN
  SELECT RAISE(ABORT, 'usage rollup: a sum left the integer range');
END;
CREATE TRIGGER usage_rollup_day_guard BEFORE UPDATE ON usage_rollup_day
WHEN typeof(NEW.requests) != 'integer' OR typeof(NEW.success) != 'integer'
  OR typeof(NEW.input_tokens) != 'integer' OR typeof(NEW.output_tokens) != 'integer'
  OR typeof(NEW.cached_tokens) != 'integer' OR typeof(NEW.reasoning_tokens) != 'integer'
  OR typeof(NEW.cost_nanos) != 'integer' OR typeof(NEW.charged_nanos) != 'integer'
BEGIN
  SELECT RAISE(ABORT, 'usage rollup: a sum left the integer range');
END;
