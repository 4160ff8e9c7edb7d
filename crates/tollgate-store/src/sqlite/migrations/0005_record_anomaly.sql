-- 5: records whose upstream numbers deserve a second look (clamped, over_reported).
ALTER TABLE usage_records ADD COLUMN anomaly TEXT;
