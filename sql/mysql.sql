-- typeorm-session: session table for mysql (generated; do not edit)
CREATE TABLE IF NOT EXISTS `sessions` (
  `id` varchar(64) NOT NULL,
  `data` text NOT NULL,
  `expires_at` bigint NOT NULL,
  `created_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL,
  `user_id` varchar(255) NULL,
  `version` integer NOT NULL DEFAULT 0,
  CONSTRAINT `PK_sessions` PRIMARY KEY (`id`),
  INDEX `IDX_sessions_expires_at` (`expires_at`),
  INDEX `IDX_sessions_user_id` (`user_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `sessions_lease` (
  `name` varchar(64) NOT NULL,
  `holder` varchar(64) NOT NULL,
  `expires_at` bigint NOT NULL,
  CONSTRAINT `PK_sessions_lease` PRIMARY KEY (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
