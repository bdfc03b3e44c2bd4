// The entity connect-typeorm 2.0 needs its user to write (its README, "Implement the Session entity"):
//
//   @Entity()
//   export class Session implements ISession {
//       @Index() @Column("bigint") public expiredAt = Date.now();
//       @PrimaryColumn("varchar", { length: 255 }) public id = "";
//       @Column("text") public json = "";
//       @DeleteDateColumn() public destroyedAt?: Date;
//   }
//
// The same decorators, applied by hand because this is plain JavaScript. Only the table name differs from the
// README (`session` would collide with connect-pg-simple's default table in the same database).
import 'reflect-metadata';
import { Column, DeleteDateColumn, Entity, Index, PrimaryColumn } from 'typeorm';

export class Session {
  expiredAt = Date.now();
  id = '';
  json = '';
  destroyedAt;
}

Index()(Session.prototype, 'expiredAt');
Column('bigint')(Session.prototype, 'expiredAt');
PrimaryColumn('varchar', { length: 255 })(Session.prototype, 'id');
Column('text')(Session.prototype, 'json');
DeleteDateColumn()(Session.prototype, 'destroyedAt');
Entity('session_connect_typeorm')(Session);
