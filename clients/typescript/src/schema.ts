/**
 * Generated from the strategy-executor OpenAPI document by openapi-typescript: do not edit.
 * Regenerate with `npm run generate` in clients/typescript (see its README).
 */

export interface paths {
    "/health": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Liveness of the database and the replicas */
        get: operations["health"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/strategies/deploy": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Create a strategy or replace its spec */
        post: operations["deploy"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/strategies": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** List strategies, newest first */
        get: operations["list_strategies"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/strategies/{strategy_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** A strategy's spec (never its credentials) */
        get: operations["get_strategy"];
        put?: never;
        post?: never;
        /** Request deletion; replicas finalize it */
        delete: operations["delete"];
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/strategies/{strategy_id}/status": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** A strategy's status and statistics */
        get: operations["get_status"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/strategies/{strategy_id}/start": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Set desired_state to running */
        post: operations["start"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/strategies/{strategy_id}/stop": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Set desired_state to stopped */
        post: operations["stop"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/strategies/{strategy_id}/execute": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Request a manual run (or join the one already pending), optionally waiting for it */
        post: operations["execute"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/strategies/{strategy_id}/executions": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** A strategy's executions, newest first */
        get: operations["list_executions"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/strategies/{strategy_id}/orders": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** A strategy's orders, newest first */
        get: operations["list_orders"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/strategies/{strategy_id}/balances": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** A paper strategy's wallet (the starting wallet until its first trade) */
        get: operations["paper_wallet"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/executions/{execution_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One execution */
        get: operations["get_execution"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/bot/start": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Deploy (or redeploy) and start a bot, or start a stopped one */
        post: operations["bot_start"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/bot/stop": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Stop a bot (a run in progress finishes) */
        post: operations["bot_stop"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/bot/deployments": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The user's bots, newest first, with statistics and recent outcomes */
        get: operations["list_deployments"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/bot/deployments/{deployment_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One bot: code, config, STATE, recent executions and orders, a paper bot's wallet */
        get: operations["get_deployment"];
        put?: never;
        post?: never;
        /** Delete a bot (its rows go once nothing is in flight) */
        delete: operations["delete_deployment"];
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/bot/deployments/{deployment_id}/run": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Run a bot now (also a stopped one); a run already waiting to start is joined, not repeated */
        post: operations["run_deployment"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/webhooks": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** List webhooks */
        get: operations["list_webhooks"];
        put?: never;
        /** Register a webhook for alerts; its signing secret is returned once */
        post: operations["create_webhook"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/webhooks/{webhook_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One webhook (never its secret) */
        get: operations["get_webhook"];
        put?: never;
        post?: never;
        /** Delete a webhook and its pending alerts */
        delete: operations["delete_webhook"];
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/webhooks/{webhook_id}/deliveries": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** A webhook's alerts, newest first, with every delivery attempt */
        get: operations["list_webhook_deliveries"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/webhooks": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Your webhooks */
        get: operations["list_my_webhooks"];
        put?: never;
        /** Register a webhook for your bots' alerts; its signing secret is returned once */
        post: operations["create_my_webhook"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/webhooks/{webhook_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post?: never;
        /** Delete one of your webhooks */
        delete: operations["delete_my_webhook"];
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/openapi.json": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** This OpenAPI document */
        get: operations["openapi"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
}
export type webhooks = Record<string, never>;
export interface components {
    schemas: {
        /** AlertDelivery */
        AlertDelivery: {
            /**
             * Delivery Id
             * Format: uuid
             * @description The event id every attempt carries (X-Executor-Event-Id).
             */
            delivery_id: string;
            /** Event */
            event: string;
            /** Strategy Id */
            strategy_id: string | null;
            /** Payload */
            payload: unknown;
            /**
             * Created At
             * Format: date-time
             */
            created_at: string;
            /** Attempts */
            attempts: number;
            /**
             * Next Attempt At
             * Format: date-time
             */
            next_attempt_at: string;
            /** Delivered At */
            delivered_at: string | null;
            /** Abandoned At */
            abandoned_at: string | null;
            /** Last Error */
            last_error: string | null;
            /** Attempt Log */
            attempt_log: components["schemas"]["DeliveryAttempt"][];
        };
        /** AlertDeliveryList */
        AlertDeliveryList: {
            /** Items */
            items: components["schemas"]["AlertDelivery"][];
        };
        /** BotExecution */
        BotExecution: {
            /**
             * Execution id
             * Format: uuid
             */
            executionId: string;
            /**
             * Status
             * @enum {string}
             */
            status: "running" | "succeeded" | "failed" | "timed_out" | "memory_exceeded" | "lost" | "interrupted";
            /**
             * Trigger
             * @enum {string}
             */
            trigger: "schedule" | "manual";
            /**
             * Scheduled for
             * Format: date-time
             */
            scheduledFor: string;
            /** Started at */
            startedAt: string | null;
            /** Finished at */
            finishedAt: string | null;
            /** Duration */
            duration: number | null;
            /** Output */
            output: string | null;
            /** Output truncated */
            outputTruncated: boolean;
            /**
             * Error
             * @description The exception and traceback, in the strategy's own line numbers.
             */
            error: string | null;
            /**
             * Result
             * @default null
             */
            result?: unknown;
            /** Replica id */
            replicaId: string;
            /** Generation */
            generation: number;
            /**
             * Wallet value
             * @description Paper bots: the wallet's value when the run ended.
             * @default null
             */
            walletValue?: string | null;
            /**
             * Wallet currency
             * @default null
             */
            walletCurrency?: string | null;
        };
        /**
         * BotHalt
         * @description Why the risk limits halted the bot: the executor API's `halt`, in camelCase.
         */
        BotHalt: {
            /**
             * Limit
             * @description The limit that tripped (e.g. max_daily_loss); null when the halt does not record it.
             */
            limit: string | null;
            /**
             * Value
             * @description The measured value, as a string; null when not recorded.
             */
            value: string | null;
            /**
             * Threshold
             * @description The limit's value, as a string; null when not recorded.
             */
            threshold: string | null;
            /**
             * Halted at
             * Format: date-time
             */
            haltedAt: string;
            /**
             * Resume at
             * @description When a pause ends by itself; null: until a person starts it.
             */
            resumeAt: string | null;
        };
        /**
         * BotHaltedResponse
         * @description 409 for a run of a bot its risk limits halted: the message in words, `halt` as figures.
         */
        BotHaltedResponse: {
            /**
             * Error
             * @constant
             */
            error: "strategy_halted";
            /**
             * Message
             * @description Since when, why, when it resumes and how to resume it.
             */
            message: string;
            halt: components["schemas"]["BotHalt"];
        };
        /** BotOrder */
        BotOrder: {
            /**
             * Order id
             * Format: uuid
             */
            orderId: string;
            /** Execution id */
            executionId: string | null;
            /**
             * Exchange
             * @enum {string}
             */
            exchange: "paper" | "coindcx";
            /** Client order id */
            clientOrderId: string;
            /** Exchange order id */
            exchangeOrderId: string | null;
            /** Market */
            market: string;
            /**
             * Side
             * @enum {string}
             */
            side: "buy" | "sell";
            /** Order type */
            orderType: string;
            /** Total quantity */
            totalQuantity: string;
            /** Price per unit */
            pricePerUnit: string | null;
            /** Status */
            status: string;
            /** Error */
            error: string | null;
            /**
             * Created at
             * Format: date-time
             */
            createdAt: string;
            /**
             * Updated at
             * Format: date-time
             */
            updatedAt: string;
        };
        /**
         * BotRunRequest
         * @description A run request: the one recorded, or the bot's pending one that this request joined.
         */
        BotRunRequest: {
            /** Run request id */
            runRequestId: number;
            /** Deployment id */
            deploymentId: string;
            /**
             * Requested at
             * Format: date-time
             */
            requestedAt: string;
            /**
             * Already pending
             * @description The bot already had a run waiting to start: this is that request, not a new one.
             */
            alreadyPending: boolean;
            /**
             * Request count
             * @description How many run requests this pending request stands for.
             */
            requestCount: number;
        };
        /**
         * BotStartRequest
         * @description Deploy a bot and start it, redeploy one (new code or settings), or start a stopped one.
         *
         *     - `{name, code, executionInterval, ...}`: deploy; when the user already has a bot of that name
         *       (not being deleted) it is redeployed in place.
         *     - `{deploymentId, name, code, executionInterval, ...}`: redeploy that bot.
         *     - `{deploymentId}` alone: start that bot again with its current code.
         */
        BotStartRequest: {
            /**
             * Deployment id
             * @default null
             */
            deploymentId?: string | null;
            /**
             * Name
             * @default null
             */
            name?: string | null;
            /**
             * Code
             * @description Python source, at most 262144 bytes.
             * @default null
             */
            code?: string | null;
            /**
             * Config
             * @description CONFIG; at most 65536 bytes as JSON.
             * @default null
             */
            config?: {
                [key: string]: unknown;
            } | null;
            /**
             * Execution interval
             * @description Seconds between runs, within the server's bounds.
             * @default null
             */
            executionInterval?: number | null;
            /**
             * Exchange
             * @description Absent: 'coindcx' when apiKey and apiSecret are given, 'paper' when neither is. 'coindcx' requires both; 'paper' with both keeps them sealed for a later switch to live.
             * @default null
             */
            exchange?: ("paper" | "coindcx") | null;
            /**
             * Api key
             * @description With apiSecret (both or neither); stored sealed, never returned.
             * @default null
             */
            apiKey?: string | null;
            /**
             * Api secret
             * @description With apiKey; stored sealed, never returned.
             * @default null
             */
            apiSecret?: string | null;
            /**
             * Risk
             * @description Risk limits (the executor API's `risk` object, its keys as they are there).
             * @default null
             */
            risk?: {
                [key: string]: unknown;
            } | null;
        };
        /** BotStopRequest */
        BotStopRequest: {
            /** Deployment id */
            deploymentId: string;
        };
        /** DeliveryAttempt */
        DeliveryAttempt: {
            /** Attempt */
            attempt: number;
            /** Replica Id */
            replica_id: string;
            /**
             * Started At
             * Format: date-time
             */
            started_at: string;
            /** Finished At */
            finished_at: string | null;
            /** Status Code */
            status_code: number | null;
            /** Error */
            error: string | null;
        };
        /**
         * DeployRequest
         * @description Create a strategy, or replace the spec of an existing one (its generation is bumped).
         */
        DeployRequest: {
            /**
             * Strategy Id
             * @description Generated (a UUID hex) when absent.
             * @default null
             */
            strategy_id?: string | null;
            /** User Id */
            user_id: string;
            /**
             * Name
             * @description Defaults to the strategy_id.
             * @default null
             */
            name?: string | null;
            /**
             * Code
             * Format: python-strategy
             * @description Python source, at most 262144 bytes as UTF-8, that compiles under the sandbox's language policy (a 422 with line and column otherwise).
             */
            code: string;
            /**
             * Config
             * @description Exposed to the code as CONFIG; at most 65536 bytes as JSON; no string or key in it may contain U+0000 (PostgreSQL cannot store it).
             */
            config?: {
                [key: string]: unknown;
            };
            /**
             * Execution Interval
             * @description Seconds between runs, within the server's configured bounds.
             */
            execution_interval: number;
            /**
             * Exchange
             * @description Where the strategy trades. Absent: 'coindcx' when api_key and api_secret are given (the seed backend's body), 'paper' when neither is. 'coindcx' requires both. 'paper' with both keeps them sealed for a later switch to live. api_key and api_secret come together: one without the other is a 422.
             * @default null
             */
            exchange?: ("paper" | "coindcx") | null;
            /**
             * Api Key
             * @description The exchange API key, with api_secret (both or neither); stored sealed, never returned. An API key belongs to one user: a key another user's strategy holds is refused with 409.
             * @default null
             */
            api_key?: string | null;
            /**
             * Api Secret
             * @description The exchange API secret, with api_key (both or neither); stored sealed, never returned.
             * @default null
             */
            api_secret?: string | null;
            /**
             * Auto Start
             * @description desired_state is 'running' when true, 'stopped' otherwise.
             * @default true
             */
            auto_start?: boolean;
            /**
             * @description Risk limits; none when absent.
             * @default null
             */
            risk?: components["schemas"]["RiskSpec"] | null;
        } & (unknown & unknown & unknown);
        /**
         * Deployment
         * @description A bot with its status and statistics.
         */
        Deployment: {
            /** Deployment id */
            deploymentId: string;
            /** Name */
            name: string;
            /**
             * Status
             * @enum {string}
             */
            status: "pending" | "running" | "stopped" | "error" | "deleting" | "halted";
            /** Status reason */
            statusReason: string | null;
            /**
             * Desired state
             * @enum {string}
             */
            desiredState: "running" | "stopped";
            /**
             * Exchange
             * @enum {string}
             */
            exchange: "paper" | "coindcx";
            /** Has credentials */
            hasCredentials: boolean;
            /** Execution interval */
            executionInterval: number;
            /** Next execution at */
            nextExecutionAt: string | null;
            /** Execution count */
            executionCount: number;
            /** Successful executions */
            successfulExecutions: number;
            /** Failed executions */
            failedExecutions: number;
            /** Missed executions */
            missedExecutions: number;
            /**
             * Avg execution time
             * @description Seconds, over every execution.
             */
            avgExecutionTime: number | null;
            /**
             * Last execution duration
             * @description Seconds.
             */
            lastExecutionDuration: number | null;
            /** Last execution at */
            lastExecutionAt: string | null;
            /** Last error */
            lastError: string | null;
            /** Generation */
            generation: number;
            /** Observed generation */
            observedGeneration: number;
            /**
             * Created at
             * Format: date-time
             */
            createdAt: string;
            /**
             * Updated at
             * Format: date-time
             */
            updatedAt: string;
            /**
             * Risk
             * @description The bot's risk limits.
             */
            risk?: {
                [key: string]: unknown;
            };
            /**
             * Halted at
             * @description While halted: when a risk limit halted it.
             * @default null
             */
            haltedAt?: string | null;
            /**
             * Resume at
             * @description While paused: when it resumes by itself.
             * @default null
             */
            resumeAt?: string | null;
            /**
             * Recent executions
             * @description The last executions, newest first (in lists: times and outcomes).
             */
            recentExecutions?: components["schemas"]["ExecutionPoint"][];
        };
        /**
         * DeploymentDetail
         * @description A bot in full: its code and config, persisted STATE, recent executions and orders, and the
         *     wallet of a paper bot (null for a live one, whose balances are on the exchange).
         */
        DeploymentDetail: {
            /** Deployment id */
            deploymentId: string;
            /** Name */
            name: string;
            /**
             * Status
             * @enum {string}
             */
            status: "pending" | "running" | "stopped" | "error" | "deleting" | "halted";
            /** Status reason */
            statusReason: string | null;
            /**
             * Desired state
             * @enum {string}
             */
            desiredState: "running" | "stopped";
            /**
             * Exchange
             * @enum {string}
             */
            exchange: "paper" | "coindcx";
            /** Has credentials */
            hasCredentials: boolean;
            /** Execution interval */
            executionInterval: number;
            /** Next execution at */
            nextExecutionAt: string | null;
            /** Execution count */
            executionCount: number;
            /** Successful executions */
            successfulExecutions: number;
            /** Failed executions */
            failedExecutions: number;
            /** Missed executions */
            missedExecutions: number;
            /**
             * Avg execution time
             * @description Seconds, over every execution.
             */
            avgExecutionTime: number | null;
            /**
             * Last execution duration
             * @description Seconds.
             */
            lastExecutionDuration: number | null;
            /** Last execution at */
            lastExecutionAt: string | null;
            /** Last error */
            lastError: string | null;
            /** Generation */
            generation: number;
            /** Observed generation */
            observedGeneration: number;
            /**
             * Created at
             * Format: date-time
             */
            createdAt: string;
            /**
             * Updated at
             * Format: date-time
             */
            updatedAt: string;
            /**
             * Risk
             * @description The bot's risk limits.
             */
            risk?: {
                [key: string]: unknown;
            };
            /**
             * Halted at
             * @description While halted: when a risk limit halted it.
             * @default null
             */
            haltedAt?: string | null;
            /**
             * Resume at
             * @description While paused: when it resumes by itself.
             * @default null
             */
            resumeAt?: string | null;
            /** Recent executions */
            recentExecutions?: components["schemas"]["BotExecution"][];
            /** Code */
            code: string;
            /** Config */
            config: {
                [key: string]: unknown;
            };
            /**
             * State
             * @description The STATE dict the bot persisted between runs.
             */
            state: unknown;
            /** Recent orders */
            recentOrders: components["schemas"]["BotOrder"][];
            /** Wallet */
            wallet: components["schemas"]["Wallet"] | null;
        };
        /** DeploymentList */
        DeploymentList: {
            /** Items */
            items: components["schemas"]["Deployment"][];
            /** Next cursor */
            nextCursor: string | null;
        };
        /** ErrorResponse */
        ErrorResponse: {
            /**
             * Error
             * @description A stable machine-readable code, e.g. not_found, unauthorized.
             */
            error: string;
            /** Message */
            message: string;
            /**
             * Request Id
             * @default null
             */
            request_id?: string | null;
        };
        /** Execution */
        Execution: {
            /**
             * Execution Id
             * Format: uuid
             */
            execution_id: string;
            /** Strategy Id */
            strategy_id: string;
            /**
             * Status
             * @enum {string}
             */
            status: "running" | "succeeded" | "failed" | "timed_out" | "memory_exceeded" | "lost" | "interrupted";
            /**
             * Trigger
             * @enum {string}
             */
            trigger: "schedule" | "manual";
            /**
             * Scheduled For
             * Format: date-time
             */
            scheduled_for: string;
            /**
             * Claimed At
             * Format: date-time
             * @description When a replica took it (its process starts a few ms later).
             */
            claimed_at: string;
            /**
             * Started At
             * @description When its process started: written with the outcome, so null while it runs (see claimed_at).
             */
            started_at: string | null;
            /** Finished At */
            finished_at: string | null;
            /** Duration */
            duration: number | null;
            /** Output */
            output: string | null;
            /** Output Truncated */
            output_truncated: boolean;
            /** Error */
            error: string | null;
            /**
             * Result
             * @default null
             */
            result?: unknown;
            /** Replica Id */
            replica_id: string;
            /** Generation */
            generation: number;
        };
        /** ExecutionList */
        ExecutionList: {
            /** Items */
            items: components["schemas"]["Execution"][];
            /** Next Cursor */
            next_cursor: string | null;
        };
        /**
         * ExecutionPoint
         * @description One recent execution, for charts: when, how long, how it ended.
         */
        ExecutionPoint: {
            /**
             * Execution id
             * Format: uuid
             */
            executionId: string;
            /**
             * Status
             * @enum {string}
             */
            status: "running" | "succeeded" | "failed" | "timed_out" | "memory_exceeded" | "lost" | "interrupted";
            /**
             * Scheduled for
             * Format: date-time
             */
            scheduledFor: string;
            /** Finished at */
            finishedAt: string | null;
            /** Duration */
            duration: number | null;
        };
        /** FieldError */
        FieldError: {
            /**
             * Field
             * @description Dotted path of the offending field; 'body' for the body as a whole.
             */
            field: string;
            /** Reason */
            reason: string;
            /**
             * Line
             * @description For code: the line of the error (1-based).
             * @default null
             */
            line?: number | null;
            /**
             * Column
             * @description For code: the column of the error (1-based).
             * @default null
             */
            column?: number | null;
        };
        /**
         * Halt
         * @description Why the risk guard halted the strategy: the limit, what it measured, and when.
         */
        Halt: {
            /**
             * Limit
             * @description The limit that tripped (e.g. max_daily_loss); null when the halt does not record it.
             */
            limit: string | null;
            /**
             * Value
             * @description The measured value, as a string; null when not recorded.
             */
            value: string | null;
            /**
             * Threshold
             * @description The limit's value, as a string; null when not recorded.
             */
            threshold: string | null;
            /**
             * Halted At
             * Format: date-time
             */
            halted_at: string;
            /**
             * Resume At
             * @description When a pause ends by itself; null: until a person starts it.
             */
            resume_at: string | null;
        };
        /** HealthResponse */
        HealthResponse: {
            /**
             * Status
             * @enum {string}
             */
            status: "healthy" | "unhealthy";
            /**
             * Database
             * @enum {string}
             */
            database: "ok" | "unavailable";
            /**
             * Active Strategies
             * @default null
             */
            active_strategies?: number | null;
            /**
             * Scheduler Running
             * @description At least one replica holds an unexpired lease.
             * @default null
             */
            scheduler_running?: boolean | null;
            /**
             * Replicas
             * @description Replicas with an unexpired lease.
             * @default null
             */
            replicas?: number | null;
            /**
             * Sandbox Layers
             * @description Per isolation layer: active on every live replica.
             */
            sandbox_layers?: {
                [key: string]: boolean;
            };
            /**
             * Reason
             * @default null
             */
            reason?: string | null;
            /**
             * @description This process's own replica, when it runs one.
             * @default null
             */
            replica?: components["schemas"]["LocalReplicaHealth"] | null;
        };
        /**
         * LocalReplicaHealth
         * @description The reconciler replica running in this process beside the API (`serve`), as it sees itself.
         */
        LocalReplicaHealth: {
            /** Replica Id */
            replica_id: string;
            /** Database Ok */
            database_ok: boolean;
            /** Running */
            running: boolean;
            /**
             * In Flight
             * @description Executions running, each in one of its slots.
             */
            in_flight: number;
            /**
             * Claimed Waiting
             * @description Executions it claimed ahead, waiting for a slot to free (they start the moment one does).
             */
            claimed_waiting: number;
            /** Executed */
            executed: number;
            /** Last Error */
            last_error: string | null;
            /** Layers */
            layers: {
                [key: string]: boolean;
            };
        };
        /** Order */
        Order: {
            /**
             * Order Id
             * Format: uuid
             */
            order_id: string;
            /** Strategy Id */
            strategy_id: string;
            /** Execution Id */
            execution_id: string | null;
            /**
             * Exchange
             * @enum {string}
             */
            exchange: "paper" | "coindcx";
            /** Client Order Id */
            client_order_id: string;
            /** Exchange Order Id */
            exchange_order_id: string | null;
            /**
             * Market
             * @description Null only for a request refused as malformed; see request.
             */
            market: string | null;
            /**
             * Side
             * @description Null only for a request refused as malformed.
             */
            side: ("buy" | "sell") | null;
            /**
             * Order Type
             * @description Null only for a request refused as malformed.
             */
            order_type: string | null;
            /**
             * Total Quantity
             * @description A decimal number, as a string; null only for a request refused as malformed.
             */
            total_quantity: string | null;
            /** Price Per Unit */
            price_per_unit: string | null;
            /** Status */
            status: string;
            /** Error */
            error: string | null;
            /** Request */
            request: unknown;
            /** Response */
            response: unknown;
            /**
             * Created At
             * Format: date-time
             */
            created_at: string;
            /**
             * Updated At
             * Format: date-time
             */
            updated_at: string;
        };
        /** OrderList */
        OrderList: {
            /** Items */
            items: components["schemas"]["Order"][];
            /** Next Cursor */
            next_cursor: string | null;
        };
        /** PaperBalance */
        PaperBalance: {
            /** Currency */
            currency: string;
            /**
             * Balance
             * @description A decimal number, as a string.
             */
            balance: string;
            /**
             * Locked Balance
             * @description Held by open limit orders; a decimal number, as a string.
             */
            locked_balance: string;
        };
        /** PaperWallet */
        PaperWallet: {
            /** Strategy Id */
            strategy_id: string;
            /**
             * Starting
             * @description True until the strategy's first trade: the wallet it will start with.
             */
            starting: boolean;
            /** Balances */
            balances: components["schemas"]["PaperBalance"][];
        };
        /**
         * RiskSpec
         * @description Limits the broker enforces whatever the strategy's code does (see the README's risk section).
         */
        RiskSpec: {
            /**
             * Max Daily Loss
             * @description Quote currency, realised plus unrealised, per UTC day.
             * @default null
             */
            max_daily_loss?: number | null;
            /**
             * Max Drawdown Pct
             * @description Percent below the equity's peak.
             * @default null
             */
            max_drawdown_pct?: number | null;
            /**
             * Max Position
             * @description Most of the traded coin held after a buy: one number, or {"BTCUSDT": 0.5, ...}.
             * @default null
             */
            max_position?: number | {
                [key: string]: number;
            } | null;
            /**
             * Max Consecutive Failures
             * @default null
             */
            max_consecutive_failures?: number | null;
            /**
             * On Breach
             * @default stop
             * @enum {string}
             */
            on_breach?: "stop" | "pause";
            /**
             * Resume After
             * @description Seconds a pause lasts.
             * @default null
             */
            resume_after?: number | null;
            /**
             * Currency
             * @description What equity is valued in.
             * @default USDT
             */
            currency?: string;
        };
        /**
         * RunRequest
         * @description A manual run request: the one recorded, or the strategy's pending one that this request joined.
         */
        RunRequest: {
            /** Run Request Id */
            run_request_id: number;
            /** Strategy Id */
            strategy_id: string;
            /**
             * Requested At
             * Format: date-time
             */
            requested_at: string;
            /** Claimed At */
            claimed_at: string | null;
            /** Execution Id */
            execution_id: string | null;
            /**
             * Already Pending
             * @description The strategy already had a run request waiting: this is that request (one execution answers it), not a new one.
             */
            already_pending: boolean;
            /**
             * Request Count
             * @description How many run requests this pending request stands for.
             */
            request_count: number;
            /**
             * @description The execution so far, once a replica has claimed the run.
             * @default null
             */
            execution?: components["schemas"]["Execution"] | null;
        };
        /**
         * Strategy
         * @description A strategy's spec: everything deployed except the credentials, which are never returned.
         */
        Strategy: {
            /** Strategy Id */
            strategy_id: string;
            /** User Id */
            user_id: string;
            /** Name */
            name: string;
            /** Code */
            code: string;
            /** Config */
            config: {
                [key: string]: unknown;
            };
            /** Risk */
            risk?: {
                [key: string]: unknown;
            };
            /** Execution Interval */
            execution_interval: number;
            /**
             * Exchange
             * @enum {string}
             */
            exchange: "paper" | "coindcx";
            /**
             * Desired State
             * @enum {string}
             */
            desired_state: "running" | "stopped";
            /** Generation */
            generation: number;
            /**
             * Status
             * @enum {string}
             */
            status: "pending" | "running" | "stopped" | "error" | "deleting" | "halted";
            /** Has Credentials */
            has_credentials: boolean;
            /** Delete Requested At */
            delete_requested_at: string | null;
            /**
             * Created At
             * Format: date-time
             */
            created_at: string;
            /**
             * Updated At
             * Format: date-time
             */
            updated_at: string;
        };
        /**
         * StrategyHaltedResponse
         * @description 409 for a run of a strategy its risk guard halted: the message in words, `halt` as the status has it.
         */
        StrategyHaltedResponse: {
            /**
             * Error
             * @constant
             */
            error: "strategy_halted";
            /**
             * Message
             * @description Since when, why, when it resumes and how to resume it.
             */
            message: string;
            halt: components["schemas"]["Halt"];
        };
        /** StrategyList */
        StrategyList: {
            /** Items */
            items: components["schemas"]["StrategySummary"][];
            /**
             * Next Cursor
             * @description Pass as cursor for the next page; null on the last page.
             */
            next_cursor: string | null;
        };
        /** StrategyStats */
        StrategyStats: {
            /** Total Executions */
            total_executions: number;
            /** Successful Executions */
            successful_executions: number;
            /** Failed Executions */
            failed_executions: number;
            /** Avg Execution Time */
            avg_execution_time: number | null;
            /** Last Execution At */
            last_execution_at: string | null;
            /** Last Error */
            last_error: string | null;
            /** Last Execution Duration */
            last_execution_duration: number | null;
            /** Missed Executions */
            missed_executions: number;
            /**
             * Consecutive Failures
             * @default 0
             */
            consecutive_failures?: number;
        };
        /** StrategyStatus */
        StrategyStatus: {
            /** Strategy Id */
            strategy_id: string;
            /** User Id */
            user_id: string;
            /** Name */
            name: string;
            /**
             * Status
             * @enum {string}
             */
            status: "pending" | "running" | "stopped" | "error" | "deleting" | "halted";
            /** Status Reason */
            status_reason: string | null;
            /**
             * Desired State
             * @enum {string}
             */
            desired_state: "running" | "stopped";
            /** Generation */
            generation: number;
            /** Observed Generation */
            observed_generation: number;
            /** Execution Interval */
            execution_interval: number;
            /** Next Execution At */
            next_execution_at: string | null;
            /**
             * Exchange
             * @enum {string}
             */
            exchange: "paper" | "coindcx";
            /** Has Credentials */
            has_credentials: boolean;
            /** Delete Requested At */
            delete_requested_at: string | null;
            /**
             * Created At
             * Format: date-time
             */
            created_at: string;
            /**
             * Updated At
             * Format: date-time
             */
            updated_at: string;
            stats: components["schemas"]["StrategyStats"];
            /** Risk */
            risk?: {
                [key: string]: unknown;
            };
            /** @default null */
            halt?: components["schemas"]["Halt"] | null;
        };
        /** StrategySummary */
        StrategySummary: {
            /** Strategy Id */
            strategy_id: string;
            /** User Id */
            user_id: string;
            /** Name */
            name: string;
            /**
             * Status
             * @enum {string}
             */
            status: "pending" | "running" | "stopped" | "error" | "deleting" | "halted";
            /**
             * Desired State
             * @enum {string}
             */
            desired_state: "running" | "stopped";
            /** Generation */
            generation: number;
            /** Execution Interval */
            execution_interval: number;
            /**
             * Exchange
             * @enum {string}
             */
            exchange: "paper" | "coindcx";
            /** Has Credentials */
            has_credentials: boolean;
            /** Delete Requested At */
            delete_requested_at: string | null;
            /**
             * Created At
             * Format: date-time
             */
            created_at: string;
            /**
             * Updated At
             * Format: date-time
             */
            updated_at: string;
            /**
             * Code
             * @description Only with include_code=true.
             * @default null
             */
            code?: string | null;
        };
        /** TenantWebhook */
        TenantWebhook: {
            /**
             * Webhookid
             * Format: uuid
             */
            webhookId: string;
            /** Url */
            url: string;
            /** Events */
            events: string[];
            /**
             * Createdat
             * Format: date-time
             */
            createdAt: string;
        };
        /** TenantWebhookCreate */
        TenantWebhookCreate: {
            /**
             * Url
             * @description http(s) URL the alerts are POSTed to.
             */
            url: string;
            /**
             * Events
             * @description Which events to send.
             */
            events: ("halted" | "resumed" | "consecutive_failures" | "order_filled" | "order_refused" | "execution_lost")[];
        };
        /** TenantWebhookCreated */
        TenantWebhookCreated: {
            /**
             * Webhookid
             * Format: uuid
             */
            webhookId: string;
            /** Url */
            url: string;
            /** Events */
            events: string[];
            /**
             * Createdat
             * Format: date-time
             */
            createdAt: string;
            /**
             * Secret
             * @description The HMAC-SHA256 key of X-Executor-Signature; shown once, never returned again.
             */
            secret: string;
        };
        /** TenantWebhookList */
        TenantWebhookList: {
            /** Items */
            items: components["schemas"]["TenantWebhook"][];
        };
        /** ValidationErrorResponse */
        ValidationErrorResponse: {
            /**
             * Error
             * @default validation_error
             * @constant
             */
            error?: "validation_error";
            /**
             * Message
             * @default the request is invalid
             */
            message?: string;
            /** Detail */
            detail: components["schemas"]["FieldError"][];
        };
        /**
         * Wallet
         * @description A paper bot's wallet now, and its value when each recent execution ended (oldest first).
         */
        Wallet: {
            /**
             * Starting
             * @description True until the bot's first trade: the wallet it starts with.
             */
            starting: boolean;
            /** Balances */
            balances: components["schemas"]["WalletBalance"][];
            /** Value history */
            valueHistory: components["schemas"]["WalletPoint"][];
        };
        /** WalletBalance */
        WalletBalance: {
            /** Currency */
            currency: string;
            /** Balance */
            balance: string;
            /** Locked balance */
            lockedBalance: string;
        };
        /** WalletPoint */
        WalletPoint: {
            /**
             * At
             * Format: date-time
             */
            at: string;
            /** Value */
            value: string;
            /** Currency */
            currency: string;
            /**
             * Execution id
             * Format: uuid
             */
            executionId: string;
        };
        /** Webhook */
        Webhook: {
            /**
             * Webhook Id
             * Format: uuid
             */
            webhook_id: string;
            /** User Id */
            user_id: string;
            /** Url */
            url: string;
            /** Events */
            events: string[];
            /**
             * Created At
             * Format: date-time
             */
            created_at: string;
        };
        /** WebhookCreate */
        WebhookCreate: {
            /** User Id */
            user_id: string;
            /**
             * Url
             * @description http(s) URL the alerts are POSTed to.
             */
            url: string;
            /**
             * Events
             * @description Which events to send.
             */
            events: ("halted" | "resumed" | "consecutive_failures" | "order_filled" | "order_refused" | "execution_lost")[];
        };
        /** WebhookCreated */
        WebhookCreated: {
            /**
             * Webhook Id
             * Format: uuid
             */
            webhook_id: string;
            /** User Id */
            user_id: string;
            /** Url */
            url: string;
            /** Events */
            events: string[];
            /**
             * Created At
             * Format: date-time
             */
            created_at: string;
            /**
             * Secret
             * @description The HMAC-SHA256 key of X-Executor-Signature. Shown once: it is stored sealed and never returned.
             */
            secret: string;
        };
        /** WebhookList */
        WebhookList: {
            /** Items */
            items: components["schemas"]["Webhook"][];
        };
    };
    responses: never;
    parameters: never;
    requestBodies: never;
    headers: never;
    pathItems: never;
}
export type $defs = Record<string, never>;
export interface operations {
    health: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description HealthResponse */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["HealthResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description HealthResponse */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["HealthResponse"];
                };
            };
        };
    };
    deploy: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["DeployRequest"];
            };
        };
        responses: {
            /** @description A strategy's spec: everything deployed except the credentials, which are never returned. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Strategy"];
                };
            };
            /** @description A strategy's spec: everything deployed except the credentials, which are never returned. */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Strategy"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description A conflict: the strategy is being deleted or is another user's, the exchange API key is another user's, (balances) the strategy trades live, or (a run) its risk guard halted it: error strategy_halted, the message says since when, why, when it resumes and how to resume it, and `halt` holds the status's halt object (limit, value, threshold, when halted, when it resumes) */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Request body, code or config too large */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    list_strategies: {
        parameters: {
            query?: {
                limit?: number;
                /** @description Opaque: the next_cursor of the previous page, echoed as it came. */
                cursor?: string | null;
                user_id?: string | null;
                status?: ("pending" | "running" | "stopped" | "error" | "deleting" | "halted") | null;
                include_code?: boolean;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description StrategyList */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["StrategyList"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    get_strategy: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                strategy_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A strategy's spec: everything deployed except the credentials, which are never returned. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Strategy"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    delete: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                strategy_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description StrategyStatus */
            202: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["StrategyStatus"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    get_status: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                strategy_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description StrategyStatus */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["StrategyStatus"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    start: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                strategy_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description StrategyStatus */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["StrategyStatus"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description A conflict: the strategy is being deleted or is another user's, the exchange API key is another user's, (balances) the strategy trades live, or (a run) its risk guard halted it: error strategy_halted, the message says since when, why, when it resumes and how to resume it, and `halt` holds the status's halt object (limit, value, threshold, when halted, when it resumes) */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    stop: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                strategy_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description StrategyStatus */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["StrategyStatus"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description A conflict: the strategy is being deleted or is another user's, the exchange API key is another user's, (balances) the strategy trades live, or (a run) its risk guard halted it: error strategy_halted, the message says since when, why, when it resumes and how to resume it, and `halt` holds the status's halt object (limit, value, threshold, when halted, when it resumes) */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    execute: {
        parameters: {
            query?: {
                /** @description Seconds to wait for the run to finish: 200 with the execution if it does, else 202. */
                wait?: number | null;
            };
            header?: never;
            path: {
                strategy_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Execution */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Execution"];
                };
            };
            /** @description A manual run request: the one recorded, or the strategy's pending one that this request joined. */
            202: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["RunRequest"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description A conflict: the strategy is being deleted or is another user's, the exchange API key is another user's, (balances) the strategy trades live, or (a run) its risk guard halted it: error strategy_halted, the message says since when, why, when it resumes and how to resume it, and `halt` holds the status's halt object (limit, value, threshold, when halted, when it resumes) */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["StrategyHaltedResponse"] | components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    list_executions: {
        parameters: {
            query?: {
                limit?: number;
                /** @description Opaque: the next_cursor of the previous page, echoed as it came. */
                cursor?: string | null;
                status?: ("running" | "succeeded" | "failed" | "timed_out" | "memory_exceeded" | "lost" | "interrupted") | null;
            };
            header?: never;
            path: {
                strategy_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description ExecutionList */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ExecutionList"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    list_orders: {
        parameters: {
            query?: {
                limit?: number;
                /** @description Opaque: the next_cursor of the previous page, echoed as it came. */
                cursor?: string | null;
            };
            header?: never;
            path: {
                strategy_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description OrderList */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["OrderList"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    paper_wallet: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                strategy_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description PaperWallet */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PaperWallet"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description A conflict: the strategy is being deleted or is another user's, the exchange API key is another user's, (balances) the strategy trades live, or (a run) its risk guard halted it: error strategy_halted, the message says since when, why, when it resumes and how to resume it, and `halt` holds the status's halt object (limit, value, threshold, when halted, when it resumes) */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    get_execution: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                execution_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Execution */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Execution"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    bot_start: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["BotStartRequest"];
            };
        };
        responses: {
            /** @description A bot with its status and statistics. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Deployment"];
                };
            };
            /** @description A bot with its status and statistics. */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Deployment"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description A conflict: the strategy is being deleted or is another user's, the exchange API key is another user's, (balances) the strategy trades live, or (a run) its risk guard halted it: error strategy_halted, the message says since when, why, when it resumes and how to resume it, and `halt` holds the status's halt object (limit, value, threshold, when halted, when it resumes) */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Request body, code or config too large */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    bot_stop: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["BotStopRequest"];
            };
        };
        responses: {
            /** @description A bot with its status and statistics. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Deployment"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description A conflict: the strategy is being deleted or is another user's, the exchange API key is another user's, (balances) the strategy trades live, or (a run) its risk guard halted it: error strategy_halted, the message says since when, why, when it resumes and how to resume it, and `halt` holds the status's halt object (limit, value, threshold, when halted, when it resumes) */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Request body, code or config too large */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    list_deployments: {
        parameters: {
            query?: {
                limit?: number;
                /** @description nextCursor of the previous page. */
                cursor?: string | null;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description DeploymentList */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["DeploymentList"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    get_deployment: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                deployment_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /**
             * @description A bot in full: its code and config, persisted STATE, recent executions and orders, and the
             *         wallet of a paper bot (null for a live one, whose balances are on the exchange).
             */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["DeploymentDetail"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    delete_deployment: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                deployment_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A bot with its status and statistics. */
            202: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Deployment"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    run_deployment: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                deployment_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A run request: the one recorded, or the bot's pending one that this request joined. */
            202: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BotRunRequest"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description A conflict: the strategy is being deleted or is another user's, the exchange API key is another user's, (balances) the strategy trades live, or (a run) its risk guard halted it: error strategy_halted, the message says since when, why, when it resumes and how to resume it, and `halt` holds the status's halt object (limit, value, threshold, when halted, when it resumes) */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BotHaltedResponse"] | components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    list_webhooks: {
        parameters: {
            query?: {
                user_id?: string | null;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description WebhookList */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["WebhookList"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    create_webhook: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["WebhookCreate"];
            };
        };
        responses: {
            /** @description WebhookCreated */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["WebhookCreated"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Request body, code or config too large */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    get_webhook: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                webhook_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Webhook */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Webhook"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    delete_webhook: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                webhook_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Webhook */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Webhook"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    list_webhook_deliveries: {
        parameters: {
            query?: {
                limit?: number;
            };
            header?: never;
            path: {
                webhook_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description AlertDeliveryList */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AlertDeliveryList"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    list_my_webhooks: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description TenantWebhookList */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["TenantWebhookList"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    create_my_webhook: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["TenantWebhookCreate"];
            };
        };
        responses: {
            /** @description TenantWebhookCreated */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["TenantWebhookCreated"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Request body, code or config too large */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    delete_my_webhook: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                webhook_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description TenantWebhook */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["TenantWebhook"];
                };
            };
            /** @description Missing or invalid bearer token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Unknown id or route */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description Invalid request */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ValidationErrorResponse"];
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    openapi: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A JSON object */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": Record<string, never>;
                };
            };
            /** @description Unexpected error (the body carries the request id) */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The database is unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
}
