-- Density (issue 16): agents spread over several agent networks, because
-- one Linux bridge takes at most 1 024 ports. The network an agent's
-- container joins is claimed at its first deploy and never changes; NULL
-- before that, and for agents deployed before this migration (they are on
-- the first network, the configured `network`). Append-only.
ALTER TABLE agents ADD COLUMN network TEXT;
CREATE INDEX agents_network ON agents (network);
